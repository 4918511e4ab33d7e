"""The S3 path under network faults: mongosnap-worker snapshot, verify and restore through
toxiproxy (toxiproxy_fixtures.py) in front of MinIO (minio_fixtures.py).

Every run must end in one of two ways, and each test asserts which: a snapshot that verifies
(against MinIO directly, bypassing the proxy) and restores to the same digests, or a clear
failure (exit 1 or 4, a message naming what failed) that leaves nothing listed complete: no
manifest, no archive, no multipart upload (listed with boto3 directly on MinIO).

  connection cut mid-part (limit_data upstream)        -> retried, completes
  connection resets for a while (reset_peer upstream)  -> retried, completes
  CompleteMultipartUpload's answer lost                -> retry gets NoSuchUpload; the object's
                                                          multipart ETag is checked and accepted
  CreateMultipartUpload's answer lost                  -> the orphan upload is aborted
  200 ms latency each way                              -> completes, elapsed plausible
  2 MB/s bandwidth limit                               -> completes, elapsed plausible
  black hole (timeout toxic) beyond the retry budget   -> clear failure in bounded time, nothing left
  connections cut mid-download (verify, restore)       -> ranged resume, completes
  downloads cut too often to finish                    -> clear failure, never success
  concurrent ranged reads (test-s3-storage-tool, 256 KiB chunks, 4 fetchers):
    connections cut mid-range                          -> each fetcher resumes, bytes exact
    a fetcher fails after the read began               -> its message reaches the reader
    reader freed while fetchers wait on a slow link    -> exits cleanly (ASan: no leak)

The worker runs with -v; the driver logs each retry ("attempt N of M failed (...); retrying
in X ms", "from byte B (resumed)" for ranged reads), which the tests count, and some toxics
are switched by watching those lines. Data: ~15 MiB of incompressible documents, stored with
--compression none and part_size=5MiB, so the archive goes up as several parts.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

import pytest

import helpers as h
from conftest import BUILD_DIR
from minio_fixtures import *  # noqa: F401,F403
from minio_fixtures import ACCESS_KEY, SECRET_KEY
from toxiproxy_fixtures import *  # noqa: F401,F403

DB = "faults"
N_DOCS = 30
DOC_BYTES = 512 * 1024  # 30 x 512 KiB = 15 MiB: 3 parts of 5 MiB
PART = 5 * 1024 * 1024
RUN_TIMEOUT = 90.0  # no single worker run in this file may take longer
RETRY_RE = re.compile(r"attempt (\d+) of (\d+) failed \(([^)]*)\); retrying in (\d+) ms")
CLEAR_FAILURE_EXITS = (h.EXIT_FAILURE, h.EXIT_UNREACHABLE)


# ---- running the worker with its log watched ------------------------------------------------

@dataclass
class Run:
    args: List[str]
    returncode: int
    stdout: str
    stderr: str
    elapsed: float
    lines: List[str] = field(default_factory=list)
    times: List[float] = field(default_factory=list)  # seconds after the start, per line

    def retries(self, what: str = "") -> List[str]:
        return [line for line in self.lines if RETRY_RE.search(line) and what in line]

    def describe(self) -> str:
        return (f"exit {self.returncode} after {self.elapsed:.1f}s: {' '.join(self.args)}\n"
                f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr[-6000:]}")


def run_watched(tools, args: List[str], env: dict, on_line: Optional[Callable[[str], None]] = None,
                timeout: float = RUN_TIMEOUT) -> Run:
    """Run the worker with -v, calling on_line(line) for each stderr line as it arrives."""
    cmd = [str(tools.require("worker")), *map(str, args), "-v"]
    lines: List[str] = []
    times: List[float] = []
    out: List[bytes] = []
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)

    def read_err():
        for raw in proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            lines.append(line)
            times.append(time.monotonic() - started)
            if on_line:
                try:
                    on_line(line)
                except Exception as e:  # a failing hook must not hang the run
                    lines.append(f"(test hook failed: {e!r})")

    def read_out():
        out.append(proc.stdout.read())

    threads = [threading.Thread(target=read_err, daemon=True),
               threading.Thread(target=read_out, daemon=True)]
    for t in threads:
        t.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        for t in threads:
            t.join(timeout=5)
        pytest.fail(f"timed out after {timeout}s: {' '.join(cmd)}\n" + "\n".join(lines[-60:]),
                    pytrace=False)
    for t in threads:
        t.join(timeout=10)
    return Run(cmd, proc.returncode, b"".join(out).decode(errors="replace"), "\n".join(lines),
               time.monotonic() - started, lines, times)


def s3_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_") and k != "CREDENTIALS_DIRECTORY"}
    env.update(HOME=str(home), AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    return env


def load_random(client, n_docs: int, doc_bytes: int, seed: int = 7) -> None:
    """Incompressible, reproducible documents (a SHA-256 chain)."""
    coll = client[DB]["blobs"]
    block = hashlib.sha256(str(seed).encode()).digest()
    for i in range(n_docs):
        chunks = []
        for _ in range(doc_bytes // 32):
            block = hashlib.sha256(block).digest()
            chunks.append(block)
        coll.insert_one({"_id": i, "data": b"".join(chunks)})


@pytest.fixture(scope="module")
def dataset(ferretdb, tmp_path_factory):
    """The session FerretDB with DB loaded once for the module (no test here writes to it)."""
    h.drop_user_dbs(ferretdb.client)
    load_random(ferretdb.client, N_DOCS, DOC_BYTES)
    uri_file = h.write_uri_file(tmp_path_factory.mktemp("faults-uri"), ferretdb.uri)
    return {"server": ferretdb, "uri_file": uri_file, "digest": h.digest(ferretdb.client, [DB])}


@pytest.fixture
def ctx(tools, dataset, minio, minio_proxy, s3_bucket, tmp_path):
    return Ctx(tools, dataset, minio, minio_proxy, s3_bucket, tmp_path)


class Ctx:
    """One test's bucket, proxy and worker runs."""

    def __init__(self, tools, dataset, minio, proxy, bucket, tmp_path):
        self.tools, self.dataset, self.minio, self.proxy = tools, dataset, minio, proxy
        self.bucket, self.tmp_path = bucket, tmp_path
        self.env = s3_env(tmp_path)

    def proxied(self, **options) -> str:
        return self.proxy.location(self.bucket, "f", part_size="5MiB", **options)

    def direct(self, **options) -> str:
        return self.minio.location(self.bucket, "f", part_size="5MiB", **options)

    def snapshot(self, store: str, name: str, on_line=None, *extra) -> Run:
        return run_watched(self.tools, ["snapshot", "--uri-file", self.dataset["uri_file"],
                                        "--store", store, "--name", name, "--json",
                                        "--compression", "none", *extra], self.env, on_line)

    def verify(self, store: str, name: str, on_line=None) -> Run:
        return run_watched(self.tools, ["verify", "--store", store, "--snapshot", name],
                           self.env, on_line)

    def restore(self, store: str, name: str, target, on_line=None) -> Run:
        uri = h.write_uri_file(self.tmp_path, target.uri, f"target-{name}")
        return run_watched(self.tools, ["restore", "--uri-file", uri, "--store", store,
                                        "--snapshot", name, "--drop"], self.env, on_line)

    # ---- the two allowed outcomes ----
    def assert_verified(self, run: Run, name: str) -> bytes:
        """The snapshot completed, verifies against MinIO directly, and is byte-exact."""
        assert run.returncode == h.EXIT_OK, run.describe()
        assert_no_credentials(run)
        keys = self.minio.keys(self.bucket)
        assert keys == [f"f/{name}.archive", f"f/{name}.manifest.json"], keys
        assert self.minio.uploads(self.bucket) == [], "a multipart upload was left behind"
        obj = self.minio.client.get_object(Bucket=self.bucket, Key=f"f/{name}.archive")
        data = obj["Body"].read()
        parts = [data[i:i + PART] for i in range(0, len(data), PART)]
        assert len(parts) >= 3
        want = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
        assert obj["ETag"].strip('"') == f"{want}-{len(parts)}"
        v = self.verify(self.direct(), name)
        assert v.returncode == h.EXIT_OK, v.describe()
        return data

    def assert_clear_failure(self, run: Run, *needles: str) -> None:
        """A failure that says what failed and leaves nothing listed complete."""
        assert run.returncode in CLEAR_FAILURE_EXITS, run.describe()
        for n in needles:
            assert n in run.stderr, f"{n!r} not in the output:\n{run.describe()}"
        assert_no_credentials(run)
        keys = self.minio.keys(self.bucket)
        assert not [k for k in keys if k.endswith(".manifest.json")], f"a manifest: {keys}"
        assert keys == [], f"objects left behind: {keys}"
        assert self.minio.uploads(self.bucket) == [], "a multipart upload was left behind"

    def assert_restores(self, store: str, name: str, target) -> Run:
        run = self.restore(store, name, target)
        assert run.returncode == h.EXIT_OK, run.describe()
        assert h.digest(target.client, [DB]) == self.dataset["digest"]
        return run


def assert_no_credentials(run: Run) -> None:
    text = run.stdout + run.stderr
    assert SECRET_KEY not in text and ACCESS_KEY not in text


def once(predicate: Callable[[str], bool], action: Callable[[], None]) -> Callable[[str], None]:
    """An on_line hook that runs action the first time a line satisfies predicate."""
    done = threading.Event()

    def hook(line: str) -> None:
        if not done.is_set() and predicate(line):
            done.set()
            action()
    hook.done = done
    return hook


def report(what: str, run: Run) -> None:
    print(f"\n[{what}] exit {run.returncode} in {run.elapsed:.1f}s, {len(run.retries())} retries")
    for line in run.retries()[:6]:
        print("   ", line[-200:])


# ---- uploads ------------------------------------------------------------------------------------

def test_connection_cut_mid_part_is_retried(ctx, ferretdb_factory):
    # Every connection is closed after 1.5 MiB upstream: each 5 MiB part breaks mid-body. The
    # toxic goes at the first retry the worker logs (a timer removes it anyway after 10 s).
    toxic = ctx.proxy.limit_data(1536 * 1024, stream="upstream")
    ctx.proxy.remove_after(toxic, 10.0)
    hook = once(lambda l: RETRY_RE.search(l) and "cannot upload part" in l,
                lambda: ctx.proxy.remove(toxic))
    run = ctx.snapshot(ctx.proxied(parallel="2"), "cut", hook)
    report("limit_data mid-part", run)
    assert run.retries("cannot upload part"), f"no part was retried:\n{run.describe()}"
    ctx.assert_verified(run, "cut")
    ctx.assert_restores(ctx.proxied(), "cut", ferretdb_factory(name="cut-target"))


def test_connection_resets_for_a_while_are_retried(ctx):
    # RST on every connection (after 50 ms) for 1.5 s once the multipart upload has started.
    def start_resets():
        ctx.proxy.remove_after(ctx.proxy.reset_peer(50, stream="upstream"), 1.5)
    hook = once(lambda l: "started the multipart upload" in l, start_resets)
    run = ctx.snapshot(ctx.proxied(parallel="2", max_attempts="8"), "resets", hook)
    report("reset_peer 1.5 s", run)
    assert hook.done.is_set(), run.describe()
    assert run.retries(), f"nothing was retried:\n{run.describe()}"
    ctx.assert_verified(run, "resets")


def test_lost_complete_answer_is_accepted_by_etag(ctx):
    # CompleteMultipartUpload reaches MinIO but its answer never comes back (the connection is
    # closed at the answer's first byte). The retry gets NoSuchUpload; the driver then checks
    # that the object's ETag is the multipart ETag of its parts. Upstream latency gives the
    # test time to place the toxic between the log line and the answer.
    ctx.proxy.latency(300, stream="upstream")
    lost = {}

    def lose_answer():
        lost["toxic"] = ctx.proxy.limit_data(0, stream="downstream")

    def restore_answers(line: str):
        if "toxic" in lost and RETRY_RE.search(line) and "cannot complete the upload" in line:
            ctx.proxy.remove(lost.pop("toxic"))

    first = once(lambda l: "completing the multipart upload" in l, lose_answer)

    def hook(line: str):
        first(line)
        restore_answers(line)
    run = ctx.snapshot(ctx.proxied(parallel="3"), "lost", hook)
    report("lost CompleteMultipartUpload answer", run)
    assert run.retries("cannot complete the upload"), run.describe()
    assert "completed by an earlier attempt whose answer was lost" in run.stderr, run.describe()
    ctx.assert_verified(run, "lost")


def test_lost_create_answer_leaves_no_duplicate_upload(ctx):
    # CreateMultipartUpload's answer is lost: MinIO made an upload whose id the worker never
    # learns; the retry makes a second one. The driver aborts the first (listing the key's
    # uploads), so the bucket ends with the object and no upload.
    ctx.proxy.latency(300, stream="upstream")
    lost = {}

    def hook(line: str):
        if "starting the multipart upload" in line and "done" not in lost:
            lost["done"] = True
            lost["toxic"] = ctx.proxy.limit_data(0, stream="downstream")
        if "toxic" in lost and RETRY_RE.search(line) and "cannot start the upload" in line:
            ctx.proxy.remove(lost.pop("toxic"))
    run = ctx.snapshot(ctx.proxied(parallel="3"), "dup", hook)
    report("lost CreateMultipartUpload answer", run)
    assert run.retries("cannot start the upload"), run.describe()
    assert "aborted a duplicate upload" in run.stderr, run.describe()
    ctx.assert_verified(run, "dup")


def test_latency(ctx):
    ctx.proxy.latency(200, stream="upstream")
    ctx.proxy.latency(200, stream="downstream")
    run = ctx.snapshot(ctx.proxied(parallel="2"), "slow", None)
    report("latency 200 ms each way", run)
    ctx.assert_verified(run, "slow")
    # At least: look-ups, create, 3 parts in 2 rounds, complete, manifest -- each >= 0.4 s.
    assert 2.0 <= run.elapsed < RUN_TIMEOUT, run.elapsed
    v = ctx.verify(ctx.proxied(), "slow")
    report("verify, latency 200 ms each way", v)
    assert v.returncode == h.EXIT_OK, v.describe()


def test_bandwidth_limit(ctx):
    # 2 MB/s per connection upstream; 2 parts at a time: 15 MiB needs >= ~3.5 s.
    ctx.proxy.bandwidth(2048, stream="upstream")
    run = ctx.snapshot(ctx.proxied(parallel="2"), "narrow", None)
    report("bandwidth 2 MB/s", run)
    ctx.assert_verified(run, "narrow")
    assert 3.0 <= run.elapsed < RUN_TIMEOUT, run.elapsed


def test_black_hole_beyond_the_retry_budget_fails_clearly(ctx):
    # Once parts are going up, nothing gets through (timeout toxic: data dropped, connection
    # held open). Each attempt stalls for stall_timeout=2s; after max_attempts=3 the part
    # fails. The toxic is lifted when the worker starts aborting the upload, so the abort
    # can reach MinIO and nothing is left behind.
    toxics = {}

    def black_hole():
        toxics["t"] = ctx.proxy.timeout(0, stream="upstream")
        ctx.proxy.remove_after(toxics["t"], 45.0)  # in any case

    def lift(line: str):
        if "t" in toxics and "aborting the multipart upload" in line:
            ctx.proxy.remove(toxics.pop("t"))
    start = once(lambda l: "started the multipart upload" in l, black_hole)

    def hook(line: str):
        start(line)
        lift(line)
    store = ctx.proxied(parallel="2", max_attempts="3", stall_timeout="2s")
    run = ctx.snapshot(store, "hole", hook)
    report("black hole (timeout toxic)", run)
    if os.environ.get("FAULTS_DEBUG"):
        print("\n".join(f"{t:6.2f} {line[:160]}" for t, line in zip(run.times, run.lines)))
    assert start.done.is_set(), run.describe()
    ctx.assert_clear_failure(run, "stalled (no progress for 2s) on each of 3 attempts")
    assert run.elapsed < 40.0, f"took {run.elapsed:.1f}s"


# ---- downloads ----------------------------------------------------------------------------------

@pytest.fixture
def stored(ctx):
    """A snapshot written directly to MinIO (no faults)."""
    run = ctx.snapshot(ctx.direct(), "stored", None)
    ctx.assert_verified(run, "stored")
    return "stored"


def test_downloads_cut_midway_resume(ctx, stored, ferretdb_factory):
    # Every connection is closed after 6 MiB downstream: the ranged GET (16 MiB ranges; the
    # archive is ~15 MiB, one range) breaks twice and is resumed from the byte where it
    # stopped, on both verify and restore: 3 attempts per range, as with the 3 MiB cut of the
    # 8 MiB ranges read before.
    ctx.proxy.limit_data(6 * 1024 * 1024, stream="downstream")
    v = ctx.verify(ctx.proxied(), stored)
    report("verify, downloads cut at 6 MiB", v)
    assert v.returncode == h.EXIT_OK, v.describe()
    assert [line for line in v.retries() if "(resumed)" in line], v.describe()
    r = ctx.assert_restores(ctx.proxied(), stored, ferretdb_factory(name="resume-target"))
    report("restore, downloads cut at 6 MiB", r)
    assert [line for line in r.retries() if "(resumed)" in line], r.describe()


def test_downloads_cut_too_often_fail_clearly(ctx, stored):
    # 64 KiB per connection: a ~15 MiB range cannot finish within max_attempts; verify must
    # fail clearly, never pass.
    ctx.proxy.limit_data(64 * 1024, stream="downstream")
    v = ctx.verify(ctx.proxied(max_attempts="3"), stored)
    report("verify, downloads cut at 64 KiB", v)
    assert v.returncode in CLEAR_FAILURE_EXITS, v.describe()
    assert "cannot read object" in v.stderr and "on each of 3 attempts" in v.stderr, v.describe()
    assert_no_credentials(v)


# ---- concurrent ranged reads, through test-s3-storage-tool --------------------------------------

TOOL = BUILD_DIR / "tests" / "unit" / "test-s3-storage-tool"
READ_CHUNK = 256 * 1024  # MS_TEST_S3_READ_CHUNK: the tool's reader fetches 256 KiB ranges
TOOL_TIMEOUT = 60


def tool_env(ctx) -> dict:
    return dict(ctx.env, MS_TEST_S3_READ_CHUNK=str(READ_CHUNK))


def put_random(ctx, key: str, size: int, seed: int) -> bytes:
    block, out = hashlib.sha256(b"faults-%d" % seed).digest(), []
    for _ in range((size + 31) // 32):
        block = hashlib.sha256(block).digest()
        out.append(block)
    data = b"".join(out)[:size]
    ctx.minio.client.put_object(Bucket=ctx.bucket, Key=f"f/{key}", Body=data)
    return data


def tool(ctx, *args: str) -> subprocess.CompletedProcess:
    if not (TOOL.is_file() and os.access(TOOL, os.X_OK)):
        pytest.fail(f"{TOOL} is not built", pytrace=False)
    return subprocess.run([str(TOOL), *args], capture_output=True, timeout=TOOL_TIMEOUT,
                          env=tool_env(ctx), stdin=subprocess.DEVNULL)


def test_concurrent_ranges_cut_midway_resume(ctx):
    # Every connection closes after 100 KiB downstream: every 256 KiB range of every fetcher
    # breaks at least once and resumes where it stopped.
    data = put_random(ctx, "cut", 16 * READ_CHUNK + 5, 1)
    ctx.proxy.limit_data(100 * 1024, stream="downstream")
    cp = tool(ctx, "get", ctx.proxied(parallel="4", max_attempts="10"), "cut")
    assert cp.returncode == 0, cp.stderr.decode()[-3000:]
    assert cp.stdout == data


def test_a_fetcher_failure_reaches_the_reader(ctx):
    # The first range is read, then every connection is cut at once and stays so: the fetchers
    # give up after max_attempts, and read() returns the failure with its message.
    size = 32 * READ_CHUNK
    data = put_random(ctx, "fail", size, 2)
    out_path = ctx.tmp_path / "fail.out"  # a file: a pipe would fill while the tool pauses
    with open(out_path, "wb") as out_file:
        proc = subprocess.Popen([str(TOOL), "get-paused",
                                 ctx.proxied(parallel="3", max_attempts="2"), "fail",
                                 str(READ_CHUNK)], stdin=subprocess.PIPE, stdout=out_file,
                                stderr=subprocess.PIPE, env=tool_env(ctx))
    try:
        assert proc.stderr.readline() == b"paused\n"
        ctx.proxy.limit_data(0, stream="downstream")
        _, err = proc.communicate(b"\n", timeout=TOOL_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = out_path.read_bytes()
    text = err.decode(errors="replace")
    assert proc.returncode == 1, text[-3000:]
    assert "cannot read object 'fail'" in text and "attempts" in text, text[-3000:]
    assert SECRET_KEY not in text and ACCESS_KEY not in text
    assert len(out) < size and out == data[:len(out)]


def test_reader_freed_while_fetchers_wait_on_a_slow_link(ctx):
    # 64 KB/s per connection: after the first range, the fetchers are mid-transfer when the
    # reader is freed; free() cancels them and joins, and the process exits cleanly.
    data = put_random(ctx, "slow", 16 * READ_CHUNK, 3)
    ctx.proxy.bandwidth(64, stream="downstream")
    started = time.monotonic()
    cp = tool(ctx, "head", ctx.proxied(parallel="4"), "slow", "10")
    assert cp.returncode == 0, cp.stderr.decode()[-3000:]
    assert cp.stdout == data[:10]
    assert cp.stderr == b"", cp.stderr.decode()[-3000:]
    report_elapsed = time.monotonic() - started
    print(f"\n[reader freed on a slow link] exit 0 in {report_elapsed:.1f}s")

