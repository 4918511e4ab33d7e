"""Partial snapshots: mongosnap-worker snapshot --ns-include/--ns-exclude against a real FerretDB.

What a partial snapshot must be:
  * its archive lists exactly the selected namespaces (read from the prelude of an uncompressed
    archive), its manifest lists them and records the patterns (ns_include/ns_exclude), and it
    verifies like any snapshot;
  * a restore (ours, and the stock mongorestore) reproduces the selected collections byte for
    byte with their indexes, and nothing else;
  * databases no pattern can match are not even listed (the worker says so with -v);
  * its captured oplog holds entries of the selected namespaces only, and a point-in-time
    restore (to the end, and --until an earlier point) reproduces the selected collections;
  * a filter that selects nothing fails (exit 1, nothing stored); a malformed pattern is a usage
    error (exit 2) naming the pattern.

FerretDB records only inserts, updates and deletes in a hand-made local.oplog.rs, so the
filtering of commands and applyOps is covered by tests/unit/test-nsfilter.c.
"""

from __future__ import annotations

import datetime
import random
import threading
import time

import bson
import pytest
from bson import Timestamp

import helpers as h

# The source: three databases with a common prefix, so "app.*" must not take "appx".
DATASET = {
    "app": {"users": 60, "orders": 250, "sessions": 40},
    "crm": {"customers": 80, "leads": 15},
    "appx": {"other": 7},
    "logs": {"events": 120},
}
OPLOG_SIZE = 256 * 1024 * 1024
UNREACHABLE_URI = "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500"


def all_namespaces():
    return sorted(f"{db}.{c}" for db, colls in DATASET.items() for c in colls)


def load_dataset(client):
    for db, colls in DATASET.items():
        h.load_simple_dataset(client, db, colls, pad=40)
    client.app.users.create_index([("group", 1)], name="group_1")
    client.app.orders.create_index([("i", -1), ("group", 1)], name="i_desc_group", unique=True)
    client.crm.customers.create_index([("s", 1)], name="s_1")


@pytest.fixture
def source(fresh_db, tmp_path):
    """The dataset on the session FerretDB, without an oplog."""
    load_dataset(fresh_db.client)
    store = tmp_path / "store"
    store.mkdir()
    fresh_db.store = store
    fresh_db.uri_file = h.write_uri_file(tmp_path, fresh_db.uri)
    return fresh_db


@pytest.fixture
def target(ferretdb_factory, tmp_path):
    server = ferretdb_factory(name="nsfilter-target")
    server.uri_file = h.write_uri_file(tmp_path, server.uri, "target-uri")
    return server


def archive_namespaces(path) -> list:
    """The namespaces the prelude of an uncompressed archive lists (".oplog" for the oplog)."""
    items = h.archive_layout(path.read_bytes())
    return sorted(i.namespace for i in items if i.kind == "metadata")


def archive_documents(path, namespace: str) -> list:
    """The documents of one namespace of an uncompressed archive, decoded."""
    data = path.read_bytes()
    return [bson.decode(data[i.offset:i.offset + i.length]) for i in h.archive_layout(data)
            if i.kind == "document" and i.namespace == namespace]


def manifest_namespaces(manifest) -> list:
    return sorted(f"{n['db']}.{n['collection']}" for n in manifest["namespaces"])


def partial_snapshot(tools, server, name, *filters, extra=()) -> dict:
    """A successful uncompressed snapshot with filters; returns its --json result."""
    run = h.snapshot(tools, server.uri_file, server.store, name, "--compression", "none",
                     "--json", *filters, *extra)
    return run.json()


def check_partial_snapshot(tools, server, name, expected, include, exclude, result,
                           written_meanwhile=()) -> dict:
    """The archive, the manifest, the result and verify all agree on the selection (counts
    against the source, but for collections written to since)."""
    archive = h.archive_path(server.store, name, "none")
    oplog = [".oplog"] if result["point_in_time"] else []
    assert archive_namespaces(archive) == sorted(expected + oplog)
    manifest = h.read_manifest(server.store, name)
    assert manifest_namespaces(manifest) == sorted(expected)
    assert manifest["ns_include"] == include
    assert manifest["ns_exclude"] == exclude
    client = server.client
    for n in manifest["namespaces"]:
        if f"{n['db']}.{n['collection']}" in written_meanwhile:
            continue
        assert n["documents"] == client[n["db"]][n["collection"]].count_documents({})
    assert result["namespaces"] == len(expected)
    assert result["ns_include"] == include
    assert result["ns_exclude"] == exclude
    assert result["collections_left_out"] >= 0
    verified = h.expect_ok(h.run_worker(tools, "verify", "--store", server.store, "--snapshot",
                                        name, "--json")).json()
    assert verified["checked_against_manifest"] is True
    assert verified["namespaces"] == len(expected)
    assert verified["documents"] == manifest["total_documents"]
    return manifest


def assert_restored_exactly(target_client, source_client, expected):
    """The target holds the expected collections, byte-identical with their indexes, and no
    other user collection."""
    assert h.all_collections(target_client) == sorted(expected)
    dbs = sorted({ns.split(".", 1)[0] for ns in expected})
    want = {k: v for k, v in h.digest(source_client, dbs).items() if k in expected}
    assert h.digest(target_client, dbs) == want
    want_indexes = {k: v for k, v in h.index_specs(source_client, dbs).items() if k in expected}
    assert h.index_specs(target_client, dbs) == want_indexes


# ---- selection -----------------------------------------------------------------------------

def test_include_one_database(tools, source, target):
    run = h.snapshot(tools, source.uri_file, source.store, "app", "--compression", "none",
                     "--json", "--ns-include", "app.*", "-v")
    result = run.json()
    expected = ["app.orders", "app.sessions", "app.users"]
    check_partial_snapshot(tools, source, "app", expected, ["app.*"], [], result)
    # The include names its database literally: neither the server's databases ("appx", "crm",
    # "logs") nor their collections were listed (listDatabases costs FerretDB time that grows
    # with every collection it holds; bench/collections-bench).
    assert "the server's databases are not listed" in run.stderr, run.stderr
    assert result["databases_skipped"] == 0
    assert result["collections_left_out"] == 0
    for db in ("appx", "crm", "logs"):
        assert f"database {db}" not in run.stderr, run.stderr
    assert "left out by the namespace filters" not in run.stderr
    assert result["ns_include_unused"] == [] and result["ns_exclude_unused"] == []

    h.restore(tools, target.uri_file, "--store", source.store, "--snapshot", "app")
    assert_restored_exactly(target.client, source.client, expected)
    assert "crm" not in target.client.list_database_names()


def test_include_with_exclude(tools, source, target):
    filters = ["--ns-include", "app.*", "--ns-include", "crm.*", "--ns-exclude", "app.sessions",
               "--ns-exclude", "*.leads"]
    result = partial_snapshot(tools, source, "mixed", *filters)
    expected = ["app.orders", "app.users", "crm.customers"]
    check_partial_snapshot(tools, source, "mixed", expected, ["app.*", "crm.*"],
                           ["app.sessions", "*.leads"], result)
    assert result["collections_left_out"] == 2  # app.sessions and crm.leads were listed
    assert result["ns_include_unused"] == [] and result["ns_exclude_unused"] == []
    h.restore(tools, target.uri_file, "--store", source.store, "--snapshot", "mixed")
    assert_restored_exactly(target.client, source.client, expected)


def test_exclude_only(tools, source, target):
    result = partial_snapshot(tools, source, "no-app", "--ns-exclude", "app.*",
                              "--ns-exclude", "logs.events")
    expected = [ns for ns in all_namespaces() if not ns.startswith("app.") and ns != "logs.events"]
    check_partial_snapshot(tools, source, "no-app", expected, [], ["app.*", "logs.events"], result)
    # "app.*" covers all of app: not listed, and that counts as leaving something out.
    assert result["databases_skipped"] >= 1
    assert result["ns_exclude_unused"] == []
    h.restore(tools, target.uri_file, "--store", source.store, "--snapshot", "no-app")
    assert_restored_exactly(target.client, source.client, expected)


def test_include_single_collection_and_stock_mongorestore(tools, source, target, ferretdb_factory):
    result = partial_snapshot(tools, source, "one", "--ns-include", "crm.customers")
    check_partial_snapshot(tools, source, "one", ["crm.customers"], ["crm.customers"], [], result)
    assert result["collections_left_out"] == 1  # crm.leads
    h.restore(tools, target.uri_file, "--store", source.store, "--snapshot", "one")
    assert_restored_exactly(target.client, source.client, ["crm.customers"])

    # The stock mongorestore reads the partial archive as it is (--noIndexRestore: FerretDB
    # refuses the "ns" field mongorestore adds to index specs).
    stock = ferretdb_factory(name="nsfilter-stock")
    cp = tools.run("mongorestore", "--uri", stock.uri, "--noIndexRestore",
                   f"--archive={h.archive_path(source.store, 'one', 'none')}")
    assert "0 document(s) failed to restore" in cp.stderr, cp.stderr[-3000:]
    assert h.all_collections(stock.client) == ["crm.customers"]
    want = {k: v for k, v in h.data_digest(source.client, ["crm"]).items() if k == "crm.customers"}
    assert h.data_digest(stock.client, ["crm"]) == want


def test_patterns_that_make_no_difference_are_reported(tools, source):
    """One pattern matching nothing is not an error while others select something, but the
    result and the log name it."""
    run = h.snapshot(tools, source.uri_file, source.store, "typos", "--json",
                     "--ns-include", "app.*", "--ns-include", "ap.*", "--ns-include", "logs.event",
                     "--ns-exclude", "app.session", "--ns-exclude", "crm.*")
    result = run.json()
    assert result["namespaces"] == 3
    assert result["ns_include_unused"] == ["ap.*", "logs.event"]
    # "crm.*" matches collections, but no include took them in the first place.
    assert result["ns_exclude_unused"] == ["app.session", "crm.*"]
    for option, pattern, what in (("--ns-include", "ap.*", "selects no collection"),
                                  ("--ns-include", "logs.event", "selects no collection"),
                                  ("--ns-exclude", "app.session", "leaves out no collection")):
        assert f"{option} '{pattern}' {what}" in run.stderr, run.stderr
    manifest = h.read_manifest(source.store, "typos")
    assert manifest["ns_include"] == ["app.*", "ap.*", "logs.event"]
    assert manifest["ns_exclude"] == ["app.session", "crm.*"]


def test_full_snapshot_records_no_filters(tools, source):
    result = h.snapshot(tools, source.uri_file, source.store, "full", "--json").json()
    manifest = h.read_manifest(source.store, "full")
    assert manifest["ns_include"] == [] and manifest["ns_exclude"] == []
    assert manifest_namespaces(manifest) == all_namespaces()
    assert "ns_include" not in result and "collections_left_out" not in result


# ---- nothing selected, bad patterns --------------------------------------------------------

@pytest.mark.parametrize("filters,message", [
    (["--ns-include", "nosuch.*"], "no collection matches --ns-include 'nosuch.*'"),
    (["--ns-include", "app.nosuch", "--ns-include", "*.missing"],
     "no collection matches --ns-include 'app.nosuch' --ns-include '*.missing'"),
    (["--ns-include", "crm.*", "--ns-exclude", "crm.*"],
     "no collection matches --ns-include 'crm.*' without also matching --ns-exclude 'crm.*'"),
    (["--ns-exclude", "*.*"], "--ns-exclude '*.*' leaves no collection"),
], ids=["include-nothing", "two-includes", "excluded-again", "exclude-all"])
def test_nothing_selected_fails_and_stores_nothing(tools, source, filters, message):
    run = h.run_worker(tools, "snapshot", "--uri-file", source.uri_file, "--store", source.store,
                       "--name", "empty", *filters, progress=True)
    assert run.returncode == h.EXIT_FAILURE, run.describe()
    assert message in run.stderr and "nothing to snapshot" in run.stderr, run.describe()
    assert run.result["status"] == "failed"
    assert run.result["exit_code"] == h.EXIT_FAILURE
    assert message in run.result["message"]
    assert h.store_files(source.store) == []


BAD_PATTERNS = [
    ("", "namespace pattern '' is empty"),
    ("nodot", "'nodot' has no '.'"),
    (".orders", "'.orders' has no database"),
    ("app.", "'app.' has no collection"),
    ("a$b.c", "'a$b.c': a database name cannot contain '$'"),
    ("a/b.*", "'a/b.*': a database name cannot contain '/'"),
    ("*.*.*.*.*.*.*.*.*", "has more than 8 '*'"),
]


@pytest.mark.parametrize("option", ["--ns-include", "--ns-exclude"])
@pytest.mark.parametrize("pattern,message", BAD_PATTERNS, ids=[p or "empty" for p, _ in BAD_PATTERNS])
def test_bad_pattern_is_a_usage_error(tools, tmp_path, option, pattern, message):
    store = tmp_path / "store"
    store.mkdir()
    # Refused before any connection: the server address is unreachable on purpose.
    uri_file = h.write_uri_file(tmp_path, UNREACHABLE_URI)
    run = h.run_worker(tools, "snapshot", "--uri-file", uri_file, "--store", store, "--name", "x",
                       "--ns-include", "app.*", option, pattern, timeout=30)
    assert run.returncode == h.EXIT_USAGE, run.describe()
    assert message in run.stderr, run.describe()
    assert h.store_files(store) == []


def test_rename_options_are_refused_on_snapshot(tools, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    uri_file = h.write_uri_file(tmp_path, UNREACHABLE_URI)
    run = h.run_worker(tools, "snapshot", "--uri-file", uri_file, "--store", store, "--name", "x",
                       "--ns-from", "a.*", "--ns-to", "b.*", timeout=30)
    assert run.returncode == h.EXIT_USAGE, run.describe()
    assert "--ns-from/--ns-to" in run.stderr
    assert h.store_files(store) == []


def test_help_documents_the_filters(tools):
    run = h.expect_ok(h.run_worker(tools, "--help", timeout=30))
    usage = run.stdout.split("mongosnap-worker restore")[0]
    assert "--ns-include PAT" in usage and "--ns-exclude PAT" in usage
    assert "wins over" in run.stdout


# ---- the oplog of a partial snapshot -------------------------------------------------------

BULK = {"bulk_a": 5000, "bulk_b": 3000}
LIVE_INITIAL = 150
WRITER_MAX_OPS = 3000
WRITER_PAUSE = 0.008


def ts_tuple(ts: Timestamp) -> tuple:
    return (ts.time, ts.inc)


class Writer(threading.Thread):
    """Inserts, $set updates and deletes, alternately on app.live (selected) and crm.live (left
    out), until stopped."""

    def __init__(self, client):
        super().__init__(daemon=True)
        self.colls = [client.app.live, client.crm.live]
        self.next_id = LIVE_INITIAL
        self.alive = [list(range(LIVE_INITIAL)), list(range(LIVE_INITIAL))]
        self.stop_event = threading.Event()
        self.ops = 0
        self.error = None
        self.rnd = random.Random(4321)

    def run(self) -> None:
        try:
            while self.ops < WRITER_MAX_OPS and not self.stop_event.is_set():
                side = self.ops % 2
                coll, alive = self.colls[side], self.alive[side]
                kind = (self.ops // 2) % 3
                if kind == 0 or len(alive) < 10:
                    coll.insert_one({"_id": self.next_id, "n": 0, "payload": "p" * 40})
                    alive.append(self.next_id)
                    self.next_id += 1
                elif kind == 1:
                    target = self.rnd.choice(alive)
                    coll.update_one({"_id": target}, {"$set": {"n": self.ops, "tag": f"t{self.ops}"}})
                else:
                    coll.delete_one({"_id": alive.pop(self.rnd.randrange(len(alive)))})
                self.ops += 1
                time.sleep(WRITER_PAUSE)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=30)
        assert self.error is None, f"the writer failed: {self.error!r}"


def entries_of(client, ns: str) -> list:
    oplog = client.local["oplog.rs"].with_options(codec_options=h.RAW)
    return sorted(oplog.find({"ns": ns}), key=lambda e: ts_tuple(e["ts"]))


def state_at(entries, until: tuple) -> list:
    """A collection as of oplog time `until`, rebuilt from its oplog entries (it was created
    after the oplog), as raw documents in _id order. FerretDB writes updates as
    {$v: 1, $set: {...}} of top-level fields."""
    docs = {}
    for e in entries:
        if ts_tuple(e["ts"]) > until:
            break
        op, o = e["op"], e["o"]
        if op == "i":
            docs[o["_id"]] = o.raw
        elif op == "u":
            _id = e["o2"]["_id"]
            if _id in docs:
                keys = list(o.keys())
                if not any(k.startswith("$") for k in keys):
                    docs[_id] = o.raw
                    continue
                doc = bson.decode(docs[_id])
                for k, v in (bson.decode(o["$set"].raw).items() if "$set" in keys else ()):
                    doc[k] = v
                for k in (o["$unset"].keys() if "$unset" in keys else ()):
                    doc.pop(k, None)
                docs[_id] = bson.encode(doc)
        elif op == "d":
            docs.pop(o["_id"], None)
        else:
            pytest.fail(f"unexpected oplog op {op!r}")
    return [docs[k] for k in sorted(docs)]


def wall_seconds(entry) -> float:
    wall = entry["wall"]
    if wall.tzinfo is None:
        wall = wall.replace(tzinfo=datetime.timezone.utc)
    return wall.timestamp()


@pytest.fixture
def source_with_oplog(fresh_db, tmp_path):
    client = fresh_db.client
    client.local.create_collection("oplog.rs", capped=True, size=OPLOG_SIZE)
    h.load_simple_dataset(client, "app", BULK, pad=120)
    for coll in (client.app.live, client.crm.live):
        coll.insert_many([{"_id": i, "n": 0, "payload": "p" * 40} for i in range(LIVE_INITIAL)])
    h.load_simple_dataset(client, "logs", {"events": 50})
    store = tmp_path / "store"
    store.mkdir()
    fresh_db.store = store
    fresh_db.uri_file = h.write_uri_file(tmp_path, fresh_db.uri)
    return fresh_db


def test_partial_oplog_and_point_in_time_restore(tools, source_with_oplog, target):
    source = source_with_oplog
    client = source.client
    writer = Writer(source.new_client())
    writer.start()
    try:
        assert h.wait_until(lambda: writer.ops >= 20 or writer.error, 30), "the writer does not write"
        rw = h.start_worker(tools, "snapshot", "--uri-file", source.uri_file, "--store", source.store,
                            "--name", "pit", "--compression", "none", "--parallel", "8", "--json",
                            "--ns-include", "app.*", progress=True)
        run = rw.finish()
        ops_at_end = writer.ops
    finally:
        writer.stop()
    h.expect_ok(run)
    result = run.json()
    assert result["point_in_time"] is True
    assert ops_at_end < WRITER_MAX_OPS, "the writer stopped before the snapshot ended"
    expected = ["app.bulk_a", "app.bulk_b", "app.live"]
    manifest = check_partial_snapshot(tools, source, "pit", expected, ["app.*"], [], result,
                                      written_meanwhile=["app.live"])

    consistency = manifest["consistency"]
    start = h.oplog_position(consistency["oplog_start"])
    end = h.oplog_position(consistency["oplog_end"])
    assert start < end
    # The source's oplog in (start, end]: the snapshot kept the app.* entries, left the others.
    window = [e for e in client.local["oplog.rs"].find({}, {"ts": 1, "ns": 1})
              if start < ts_tuple(e["ts"]) <= end]
    kept = [e for e in window if e["ns"].startswith("app.")]
    others = [e for e in window if not e["ns"].startswith("app.")]
    assert len(kept) >= 10 and len(others) >= 10, (len(kept), len(others))
    assert consistency["oplog_entries"] == len(kept)
    assert result["oplog_entries_left_out"] == len(others)
    # The archive's oplog holds exactly those entries, in order.
    captured = archive_documents(h.archive_path(source.store, "pit", "none"), ".oplog")
    assert {e["ns"] for e in captured} == {"app.live"}
    assert [ts_tuple(e["ts"]) for e in captured] == sorted(ts_tuple(e["ts"]) for e in kept)

    app_entries = entries_of(client, "app.live")
    during = [e for e in app_entries if start < ts_tuple(e["ts"]) <= end]

    # Restore to the end: app.* as the source was at oplog_end, crm absent.
    restored = h.restore(tools, target.uri_file, "--store", source.store, "--snapshot", "pit",
                         "--json").json()
    assert restored["oplog_applied"] == len(kept)
    # The last entry replayed is the last selected one (others were never captured).
    assert h.oplog_position(restored["restored_to"]) == ts_tuple(during[-1]["ts"])
    assert h.raw_docs(target.client.app.live) == state_at(app_entries, end)
    bulk = {k: v for k, v in h.digest(client, ["app"]).items() if k != "app.live"}
    assert {k: v for k, v in h.digest(target.client, ["app"]).items() if k != "app.live"} == bulk
    assert h.all_collections(target.client) == expected

    # --until an earlier point after app.live was copied (a copy already holds the writes made
    # before it was read), into another database.
    copied_at = [t for line, t in zip(run.progress_lines, run.progress_times)
                 if '"namespace" : "app.live"' in line and '"event" : "namespace"' in line]
    assert len(copied_at) == 1, run.progress_lines
    after_copy = [e for e in during if wall_seconds(e) > copied_at[0]]
    assert len(after_copy) >= 6, f"only {len(after_copy)} writes after app.live was copied"
    until = ts_tuple(after_copy[len(after_copy) // 2]["ts"])
    expected_until = state_at(app_entries, until)
    assert expected_until != state_at(app_entries, end)
    run = h.restore(tools, target.uri_file, "--store", source.store, "--snapshot", "pit",
                    "--until", f"{until[0]}:{until[1]}", "--ns-include", "app.live",
                    "--ns-from", "app.*", "--ns-to", "app_until.*", "--json")
    assert h.oplog_position(run.json()["restored_to"]) == until
    assert h.raw_docs(target.client.app_until.live) == expected_until
    assert h.all_collections(target.client, ["app_until"]) == ["app_until.live"]
    assert "crm" not in target.client.list_database_names()
