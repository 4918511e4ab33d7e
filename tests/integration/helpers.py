"""Helpers shared by the engine integration tests (test_engine_*.py): running mongosnap-worker
with its progress pipe, reading stored snapshots, comparing deployments, and the varied
dataset the round-trip and interoperability tests use.

Facts about FerretDB 1.24 (the test server) these helpers rely on were probed by hand; the
docstring of test_engine_roundtrip.py lists what FerretDB cannot store.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import bson
import pytest
from bson import Binary, Int64, ObjectId, Regex, Timestamp
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "scripts" / "lib"))
import dbdigest  # noqa: E402  (scripts/lib is not a package)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CORRUPT = 3
EXIT_UNREACHABLE = 4
EXIT_CANCELLED = 5

WORKER_TIMEOUT = 240.0
SYSTEM_DBS = frozenset({"admin", "config", "local"})
RAW = CodecOptions(document_class=RawBSONDocument)


# ---- running the worker -------------------------------------------------------------------

@dataclass
class WorkerRun:
    """A finished mongosnap-worker run."""

    args: List[str]
    returncode: int
    stdout: str
    stderr: str
    progress_lines: List[str] = field(default_factory=list)
    progress_times: List[float] = field(default_factory=list)  # time.time() each line was read

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def events(self) -> List[dict]:
        """The progress lines as JSON objects (fails the test on a line that is not JSON)."""
        out = []
        for line in self.progress_lines:
            try:
                out.append(json.loads(line))
            except ValueError as e:
                pytest.fail(f"progress line is not JSON ({e}): {line!r}")
        return out

    @property
    def result(self) -> Optional[dict]:
        results = [e for e in self.events if e.get("event") == "result"]
        return results[-1] if results else None

    def json(self) -> dict:
        """stdout of a --json run: one JSON object on the last line."""
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        assert lines, f"no JSON on stdout: {self.describe()}"
        return json.loads(lines[-1])

    def describe(self) -> str:
        return (f"exit {self.returncode}: {' '.join(self.args)}\n--- stdout\n{self.stdout}"
                f"\n--- stderr\n{self.stderr}")


class _ProgressReader(threading.Thread):
    """Collects lines from the read end of the progress pipe, with the time each arrived."""

    def __init__(self, fd: int, on_line=None):
        super().__init__(daemon=True)
        self.fd = fd
        self.lines: List[str] = []
        self.times: List[float] = []
        self.on_line = on_line
        self.cond = threading.Condition()

    def run(self) -> None:
        with os.fdopen(self.fd, "rb", buffering=0) as f:
            pending = b""
            while True:
                chunk = f.read(65536)
                if not chunk:
                    break
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    text = line.decode("utf-8", errors="replace")
                    with self.cond:
                        self.lines.append(text)
                        self.times.append(time.time())
                        self.cond.notify_all()
                    if self.on_line:
                        self.on_line(text)
            if pending:
                with self.cond:
                    self.lines.append(pending.decode("utf-8", errors="replace"))
                    self.times.append(time.time())
                    self.cond.notify_all()

    def wait_for(self, predicate, timeout: float) -> Optional[dict]:
        """Wait until a progress line (parsed) satisfies predicate; returns it or None."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self.cond:
            while True:
                while seen < len(self.lines):
                    try:
                        ev = json.loads(self.lines[seen])
                    except ValueError:
                        ev = None
                    seen += 1
                    if ev is not None and predicate(ev):
                        return ev
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (not self.is_alive() and seen >= len(self.lines)):
                    return None
                self.cond.wait(min(remaining, 0.2))


class RunningWorker:
    """A worker started in the background (for signals, concurrent writers)."""

    def __init__(self, worker: Path, args: Sequence[str], progress: bool, env=None):
        self.args = [str(worker), *map(str, args)]
        self.reader: Optional[_ProgressReader] = None
        pass_fds = ()
        if progress:
            r, w = os.pipe()
            self.args += ["--progress-fd", str(w)]
            pass_fds = (w,)
        self.started_at = time.time()
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, pass_fds=pass_fds, env=env)
        if progress:
            os.close(w)
            self.reader = _ProgressReader(r)
            self.reader.start()

    def wait_for_event(self, predicate, timeout: float = 60.0) -> Optional[dict]:
        assert self.reader is not None
        return self.reader.wait_for(predicate, timeout)

    def finish(self, timeout: float = WORKER_TIMEOUT) -> WorkerRun:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            pytest.fail(f"timed out after {timeout}s: {' '.join(self.args)}\n{out!r}\n{err!r}",
                        pytrace=False)
        lines: List[str] = []
        times: List[float] = []
        if self.reader is not None:
            self.reader.join(timeout=30)
            lines, times = self.reader.lines, self.reader.times
        return WorkerRun(self.args, self.proc.returncode, out.decode(errors="replace"),
                         err.decode(errors="replace"), lines, times)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def run_worker(tools, *args, progress: bool = False, timeout: float = WORKER_TIMEOUT,
               env=None) -> WorkerRun:
    """Run mongosnap-worker to completion (any exit status) and collect everything it said."""
    rw = RunningWorker(tools.require("worker"), args, progress, env=env)
    return rw.finish(timeout)


def start_worker(tools, *args, progress: bool = True, env=None) -> RunningWorker:
    return RunningWorker(tools.require("worker"), args, progress, env=env)


def expect_ok(run: WorkerRun) -> WorkerRun:
    assert run.returncode == EXIT_OK, run.describe()
    return run


def write_uri_file(directory: Path, uri: str, name: str = "uri") -> Path:
    """The URI in a private file, as the agent passes it (--uri-file)."""
    path = Path(directory) / name
    path.write_text(uri + "\n")
    path.chmod(0o600)
    return path


def snapshot(tools, uri_file: Path, store: Path, name: str, *extra: str,
             progress: bool = False) -> WorkerRun:
    """A snapshot that must succeed."""
    return expect_ok(run_worker(tools, "snapshot", "--uri-file", uri_file, "--store", store,
                                "--name", name, *extra, progress=progress))


def restore(tools, uri_file: Path, *source: str, progress: bool = False) -> WorkerRun:
    """A restore that must succeed (source: --store S --snapshot K, or --archive F, plus options)."""
    return expect_ok(run_worker(tools, "restore", "--uri-file", uri_file, *source,
                                progress=progress))


# ---- stored objects -------------------------------------------------------------------------

ARCHIVE_SUFFIX = {"zstd": ".archive.zst", "gzip": ".archive.gz", "none": ".archive"}


def archive_path(store: Path, name: str, compression: str = "zstd", prefix: str = "") -> Path:
    base = Path(store) / prefix if prefix else Path(store)
    return base / (name + ARCHIVE_SUFFIX[compression])


def manifest_path(store: Path, name: str, prefix: str = "") -> Path:
    base = Path(store) / prefix if prefix else Path(store)
    return base / (name + ".manifest.json")


def read_manifest(store: Path, name: str, prefix: str = "") -> dict:
    return json.loads(manifest_path(store, name, prefix).read_text())


def store_files(store: Path) -> List[str]:
    """Every entry below store (files and directories, dotfiles included), relative paths."""
    out = []
    for root, dirs, files in os.walk(store):
        rel = Path(root).relative_to(store)
        out += [str(rel / d) + "/" for d in dirs]
        out += [str(rel / f) for f in files]
    return sorted(p[2:] if p.startswith("./") else p for p in out)


def slice_end(name: str) -> tuple:
    """The end position an oplog slice manifest's name gives ("<start>-<end>[-idle].slice.json")."""
    end = name.split("-")[1].split(".slice")[0]
    t, i = end.split(".")
    return int(t), int(i)


def oplog_position(value) -> tuple:
    """(t, i) of a manifest position ({"$timestamp": {"t", "i"}}) or a bson Timestamp."""
    if isinstance(value, Timestamp):
        return (value.time, value.inc)
    ts = value["$timestamp"]
    return (int(ts["t"]), int(ts["i"]))


# ---- deployments ----------------------------------------------------------------------------

def user_dbs(client) -> List[str]:
    return sorted(n for n in client.list_database_names() if n not in SYSTEM_DBS)


def drop_user_dbs(client) -> None:
    for name in user_dbs(client):
        client.drop_database(name)


def digest(client, dbs: Optional[Iterable[str]] = None, rename: Optional[Dict[str, str]] = None) -> dict:
    """dbdigest.deployment_digest over the user databases (byte-exact, per collection)."""
    return dbdigest.deployment_digest(client, sorted(dbs) if dbs is not None else user_dbs(client),
                                      rename)


def data_digest(client, dbs=None, rename=None) -> dict:
    """Only what documents hold: {ns: (count, sha256)} (for restores without indexes)."""
    return {k: (v["count"], v["sha256"]) for k, v in digest(client, dbs, rename).items()}


def index_specs(client, dbs=None, rename=None) -> dict:
    """{ns: sorted index specs without "v"/"ns"} for every user collection."""
    out = {}
    for db_name in sorted(dbs) if dbs is not None else user_dbs(client):
        for coll in sorted(client[db_name].list_collection_names()):
            key = f"{(rename or {}).get(db_name, db_name)}.{coll}"
            specs = []
            for spec in client[db_name][coll].list_indexes():
                d = {k: v for k, v in spec.items() if k not in ("v", "ns")}
                d["key"] = list(d["key"].items())
                specs.append(d)
            out[key] = sorted(specs, key=lambda s: s["name"])
    return out


def collection_options(client, dbs=None, rename=None) -> dict:
    """{ns: listCollections options} for every user collection."""
    out = {}
    for db_name in sorted(dbs) if dbs is not None else user_dbs(client):
        for info in client[db_name].list_collections():
            key = f"{(rename or {}).get(db_name, db_name)}.{info['name']}"
            out[key] = dict(info.get("options", {}))
    return out


def raw_docs(coll) -> List[bytes]:
    """The collection's documents as raw BSON, in _id order."""
    return [d.raw for d in coll.with_options(codec_options=RAW).find({}, sort=[("_id", 1)])]


def all_collections(client, dbs=None) -> List[str]:
    """Every user collection as db.coll (system.js included)."""
    out = []
    for db_name in sorted(dbs) if dbs is not None else user_dbs(client):
        out += [f"{db_name}.{c}" for c in client[db_name].list_collection_names()]
    return sorted(out)


# ---- the varied dataset ---------------------------------------------------------------------


BINARY_SUBTYPES = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0x80)
DEEP_LEVELS = 90
BIG_DOCUMENT_BYTES = 16 * 1024 * 1024 - 1024
MAIN_DB = "rt_main"
OTHER_DB = "rt_other"
ODD_DB = "rt-Odd_Name-9"
UNICODE_COLLECTIONS = ("集合 ✓ données", "коллекция🐢")


def deep_document(levels: int) -> dict:
    d: dict = {"leaf": "bottom", "n": levels}
    for i in range(levels - 1):
        d = {"level": levels - 1 - i, "child": d}
    return d


def type_documents() -> List[dict]:
    """One document per BSON type (and corner values) FerretDB accepts."""
    when = datetime.datetime(2024, 2, 29, 23, 59, 58, 123000)
    docs = [
        {"_id": "double", "v": 3.141592653589793, "small": 5e-324, "big": 1.7976931348623157e308},
        {"_id": "string", "v": "plain", "unicode": "héllo ✓ 𝄞 日本語", "empty": "", "nul": "a\x00b"},
        {"_id": "document", "v": {"a": 1, "b": {"c": "d"}}, "empty": {}},
        {"_id": "array", "v": [1, "two", 3.0, None, {"five": 5}, True], "empty": [],
         "docs": [{"a": [1, 2]}, {"b": [{"c": [3]}]}]},
        {"_id": "objectid", "v": ObjectId("65e0a1b2c3d4e5f601234567")},
        {"_id": "bool", "t": True, "f": False},
        {"_id": "datetime", "v": when, "epoch": datetime.datetime(1970, 1, 1),
         "before_epoch": datetime.datetime(1901, 12, 13, 20, 45, 52),
         "far": datetime.datetime(9999, 12, 31, 23, 59, 59, 999000)},
        {"_id": "null", "v": None},
        {"_id": "regex", "v": Regex("^a.*b$", "imsx"), "plain": Regex("x+"), "unicode": Regex("ü+", "u")},
        {"_id": "int32", "v": 42, "min": -2**31, "max": 2**31 - 1, "zero": 0},
        {"_id": "timestamp", "v": Timestamp(1_700_000_000, 7), "zero": Timestamp(0, 0),
         "max": Timestamp(2**32 - 1, 2**32 - 1)},
        {"_id": "int64", "v": Int64(1 << 40), "min": Int64(-2**63), "max": Int64(2**63 - 1)},
        # An empty field name ("") breaks mongosnap's restore: see test_engine_roundtrip.
        {"_id": "keys", "a$b": 1, "ключ ✓": 2, "k" * 200: 4, "price": "$5"},
    ]
    for st in BINARY_SUBTYPES:
        payload = uuid.UUID(int=st + 1).bytes if st in (3, 4) else bytes(range(st, st + 16))
        doc = {"_id": f"binary-{st}", "v": Binary(payload, st)}
        if st not in (2, 3, 4):
            doc["empty"] = Binary(b"", st)
        docs.append(doc)
    return docs


def id_documents() -> List[dict]:
    """_id values of many types in one collection (sorting across types)."""
    return [
        {"_id": 7, "t": "int32"},
        {"_id": Int64(2**40), "t": "int64"},
        {"_id": 2.5, "t": "double"},
        {"_id": "seven", "t": "string"},
        {"_id": ObjectId("65e0a1b2c3d4e5f601234568"), "t": "objectid"},
        {"_id": {"a": 1, "b": "x"}, "t": "document"},
        {"_id": Binary(b"\x01\x02\x03", 0), "t": "binary"},
        {"_id": datetime.datetime(2021, 1, 1), "t": "date"},
        {"_id": True, "t": "bool"},
        {"_id": None, "t": "null"},
        {"_id": Timestamp(1, 1), "t": "timestamp"},
    ]


def load_varied_dataset(client, big_document: bool = True, many: int = 3000,
                        array_len: int = 50_000) -> dict:
    """Create the round-trip dataset in MAIN_DB, OTHER_DB and ODD_DB; returns a summary
    {"collections": [...], "capped": ns, "empty": [...]}. Deterministic."""
    main = client[MAIN_DB]
    main.types.insert_many(type_documents(), ordered=True)
    main.ids.insert_many(id_documents(), ordered=True)
    main.nested.insert_many([
        {"_id": "deep90", "v": deep_document(DEEP_LEVELS)},
        {"_id": "deep-arrays", "v": _deep_array_docs(30)},
        {"_id": "wide", **{f"field{i:04d}": i for i in range(2000)}},
    ])
    main.arrays.insert_many([
        {"_id": "ints", "v": list(range(array_len))},
        {"_id": "docs", "v": [{"i": i, "s": f"item {i}", "sub": {"even": i % 2 == 0}} for i in range(array_len // 5)]},
        {"_id": "strings", "v": [f"string number {i} ✓" for i in range(array_len // 10)]},
    ])
    groups = ["alpha", "beta", "gamma", "delta"]
    many_docs = []
    for i in range(many):
        d = {"_id": i, "email": f"user{i}@example.com", "group": groups[i % 4], "rank": (i * 7919) % 1000,
             "meta": {"level": {"deep": i % 13}}, "note": "n" * (i % 50)}
        if i % 3 == 0:
            d["opt"] = i
        if i % 5 == 0:
            d["code"] = f"C{i:05d}"
        many_docs.append(d)
    main.many.insert_many(many_docs, ordered=False)
    main.many.create_index([("email", 1)], unique=True, name="email_unique")
    main.many.create_index([("group", 1), ("rank", -1)], name="group_rank")
    main.many.create_index([("rank", -1)], name="rank_desc")
    main.many.create_index([("opt", 1)], sparse=True, name="opt_sparse")
    main.many.create_index([("code", 1)], unique=True, sparse=True, name="code_unique_sparse")
    main.many.create_index([("group", 1), ("email", 1)], unique=True, name="group_email_unique")
    main.many.create_index([("meta.level.deep", 1)], name="meta_level_deep")
    main.many.create_index([("note", 1)], name="индекс ✓ note")

    if big_document:
        # One document just under 16 MiB (the server's limit), with small neighbours.
        filler = ("0123456789abcdef" * (BIG_DOCUMENT_BYTES // 16 + 1))[:BIG_DOCUMENT_BYTES - 64]
        main.big.insert_one({"_id": "big", "s": filler})
        main.big.insert_many([{"_id": "small-1", "v": 1}, {"_id": "small-2", "v": 2}])
        assert len(main.big.with_options(codec_options=RAW).find_one({"_id": "big"}).raw) > 16 * 1024 * 1024 - 2048

    main.create_collection("empty")
    main.create_collection("empty_indexed")
    main.empty_indexed.create_index([("k", 1)], unique=True, name="k_unique")
    main.create_collection("capped", capped=True, size=1024 * 1024, max=5000)
    main.capped.insert_many([{"seq": i, "msg": f"event {i}"} for i in range(300)])
    main["a.b.c"].insert_many([{"_id": i, "dotted": True} for i in range(5)])
    for name in UNICODE_COLLECTIONS:
        main[name].insert_many([{"_id": i, "name": name, "i": i} for i in range(10)])
        main[name].create_index([("i", -1)], name="i_desc")
    main["system.js"].insert_one({"_id": "stored", "value": "function body is not storable here"})

    other = client[OTHER_DB]
    other.things.insert_many([{"_id": i, "thing": f"thing {i}"} for i in range(100)])
    other.things.create_index([("thing", 1)], name="thing_1")
    other.stuff.insert_many([{"_id": i, "stuff": i * i} for i in range(50)])
    client[ODD_DB].c.insert_many([{"_id": i} for i in range(3)])
    return {
        "capped": f"{MAIN_DB}.capped",
        "empty": [f"{MAIN_DB}.empty", f"{MAIN_DB}.empty_indexed"],
        "collections": all_collections(client, [MAIN_DB, OTHER_DB, ODD_DB]),
    }


def _deep_array_docs(levels: int):
    d: object = "bottom"
    for i in range(levels):
        d = [{"at": i, "inner": d}]
    return d


# ---- a small generic dataset ----------------------------------------------------------------

def load_simple_dataset(client, db_name: str, collections: Dict[str, int], pad: int = 100) -> None:
    """db_name.<coll> with n documents each: {_id: i, i, s: padding}."""
    for coll, n in collections.items():
        if n == 0:
            client[db_name].create_collection(coll)
            continue
        batch = []
        for i in range(n):
            batch.append({"_id": i, "i": i, "group": i % 10, "s": f"{coll}-{i}-" + "x" * pad})
            if len(batch) == 2000:
                client[db_name][coll].insert_many(batch, ordered=False)
                batch = []
        if batch:
            client[db_name][coll].insert_many(batch, ordered=False)


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# ---- the mongodump archive layout -------------------------------------------------------------

ARCHIVE_MAGIC = 0x8199E26D
TERMINATOR = 0xFFFFFFFF


@dataclass
class ArchiveItem:
    kind: str  # "header", "metadata", "terminator", "namespace-header", "document"
    offset: int
    length: int
    namespace: str = ""


def archive_layout(data: bytes) -> List[ArchiveItem]:
    """Where each piece of an uncompressed mongodump archive is (for aimed damage)."""
    assert int.from_bytes(data[:4], "little") == ARCHIVE_MAGIC, "not an uncompressed archive"
    items: List[ArchiveItem] = []
    pos = 4
    state = "header"
    current = ""
    while pos < len(data):
        word = int.from_bytes(data[pos:pos + 4], "little")
        if word == TERMINATOR:
            items.append(ArchiveItem("terminator", pos, 4, current))
            pos += 4
            state = "namespace-header" if state in ("metadata", "document") else state
            continue
        if state == "header":
            items.append(ArchiveItem("header", pos, word))
            state = "metadata"
        elif state == "metadata":
            meta = bson.decode(data[pos:pos + word])
            items.append(ArchiveItem("metadata", pos, word, f"{meta.get('db')}.{meta.get('collection')}"))
        elif state == "namespace-header":
            head = bson.decode(data[pos:pos + word])
            current = f"{head['db']}.{head['collection']}"
            items.append(ArchiveItem("namespace-header", pos, word, current))
            state = "eof" if head.get("EOF") else "document"
        elif state == "eof":
            raise AssertionError(f"a document after an EOF header at {pos}")
        else:
            items.append(ArchiveItem("document", pos, word, current))
        pos += word
        if state == "eof":
            # the EOF header's terminator follows
            assert int.from_bytes(data[pos:pos + 4], "little") == TERMINATOR
            items.append(ArchiveItem("terminator", pos, 4, current))
            pos += 4
            state = "namespace-header"
    return items


def flip_byte(path: Path, offset: int, mask: int = 0x01) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        assert len(b) == 1, f"offset {offset} is past the end of {path}"
        f.seek(offset)
        f.write(bytes([b[0] ^ mask]))


def truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)
