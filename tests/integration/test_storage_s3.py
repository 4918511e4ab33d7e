"""The S3 storage driver against MinIO, through mongosnap-worker (snapshot, verify, restore with
--store s3://...) and through tests/unit/test-s3-storage-tool (download URLs, clean_stale),
which the worker does not expose.

Covered: round trips with credentials from the environment and from a systemd
CREDENTIALS_DIRECTORY; a multipart snapshot (5 MiB parts, ~20 MiB incompressible) checked byte
for byte with boto3; concurrent ranged reads (objects of 0 bytes to many chunks, 1 to 4
fetchers) byte for byte, an object replaced mid-read, a reader freed while its fetchers run; a presigned URL fetched with plain curl, and refused once expired; SIGTERM
during an upload leaves neither a multipart upload nor an object; clean_stale aborts a
leftover upload under the prefix and only there; wrong secret, wrong key id, missing bucket,
credentials in the location and an unreachable endpoint give clear errors, the documented
exit codes, and never the secret or the access key id.

Faults injected with toxiproxy are in test_s3_faults.py; TLS (private and system CA), SSE-S3,
SSE-KMS and virtual-hosted addressing in test_s3_tls_sse.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import helpers as h
from conftest import BUILD_DIR
from minio_fixtures import *  # noqa: F401,F403
from minio_fixtures import ACCESS_KEY, SECRET_KEY

DB = "s3data"
TOOL = BUILD_DIR / "tests" / "unit" / "test-s3-storage-tool"
PART = 5 * 1024 * 1024
TOOL_TIMEOUT = 60
PRESIGN_SECONDS = 2
UNREACHABLE_LIMIT_SECONDS = 30.0


def s3_env(home: Path, **extra: str) -> dict:
    """The worker's environment: no inherited AWS settings, a HOME without ~/.aws."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_") and k != "CREDENTIALS_DIRECTORY"}
    env["HOME"] = str(home)
    env.update(extra)
    return env


def env_credentials(home: Path, key_id: str = ACCESS_KEY, secret: str = SECRET_KEY) -> dict:
    return s3_env(home, AWS_ACCESS_KEY_ID=key_id, AWS_SECRET_ACCESS_KEY=secret)


def run_tool(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    if not (TOOL.is_file() and os.access(TOOL, os.X_OK)):
        pytest.fail(f"{TOOL} is not built (ninja -C {BUILD_DIR})", pytrace=False)
    cp = subprocess.run([str(TOOL), *args], capture_output=True, timeout=TOOL_TIMEOUT, env=env,
                        stdin=subprocess.DEVNULL)
    if check and cp.returncode != 0:
        pytest.fail(f"exit {cp.returncode}: {TOOL} {' '.join(args)}\n{cp.stderr.decode()}",
                    pytrace=False)
    return cp


def assert_no_credentials(text: str) -> None:
    assert SECRET_KEY not in text, "the secret access key appears in the output"
    assert ACCESS_KEY not in text, "the access key id appears in the output"


def run_text(run: h.WorkerRun) -> str:
    return run.stdout + "\n" + run.stderr + "\n" + "\n".join(run.progress_lines)


def load_random(client, n_docs: int, doc_bytes: int, seed: int = 1) -> None:
    """Incompressible documents: os.urandom is not reproducible, so a hash chain is used."""
    coll = client[DB]["blobs"]
    block = hashlib.sha256(str(seed).encode()).digest()
    for i in range(n_docs):
        chunks = []
        for _ in range(doc_bytes // 32):
            block = hashlib.sha256(block).digest()
            chunks.append(block)
        coll.insert_one({"_id": i, "data": b"".join(chunks)})


@pytest.fixture
def source(fresh_db, tmp_path):
    client = fresh_db.client
    h.load_simple_dataset(client, DB, {"orders": 800, "users": 120, "empty": 0})
    client[DB]["orders"].create_index("group")
    fresh_db.uri_file = h.write_uri_file(tmp_path, fresh_db.uri)
    return fresh_db


def snapshot(tools, server, store: str, name: str, env: dict, *extra: str, **kw) -> h.WorkerRun:
    return h.run_worker(tools, "snapshot", "--uri-file", server.uri_file, "--store", store,
                        "--name", name, "--json", *extra, env=env, **kw)


# ---- round trips ------------------------------------------------------------------------------

def test_roundtrip_with_environment_and_systemd_credentials(tools, source, minio, s3_bucket,
                                                           ferretdb_factory, tmp_path):
    store = minio.location(s3_bucket, "nightly/rs0")
    want = h.digest(source.client, [DB])

    # Credentials from the environment.
    env = env_credentials(tmp_path)
    run = h.expect_ok(snapshot(tools, source, store, "from-env", env, "--prefix", "node1"))
    result = run.json()
    assert result["archive"] == "node1/from-env.archive.zst"
    assert_no_credentials(run_text(run))
    keys = minio.keys(s3_bucket)
    assert keys == ["nightly/rs0/node1/from-env.archive.zst", "nightly/rs0/node1/from-env.manifest.json"]

    # The same store with systemd credentials only (no AWS_* variables at all).
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "s3-access-key-id").write_text(ACCESS_KEY + "\n")
    (creds / "s3-secret-access-key").write_text(SECRET_KEY + "\n")
    sd_env = s3_env(tmp_path, CREDENTIALS_DIRECTORY=str(creds))
    run = h.expect_ok(snapshot(tools, source, store, "from-systemd", sd_env, "--prefix", "node1",
                               "--compression", "gzip"))
    assert_no_credentials(run_text(run))

    for name, env_used in (("from-env", env), ("from-systemd", sd_env)):
        run = h.expect_ok(h.run_worker(tools, "verify", "--store", store, "--snapshot",
                                       f"node1/{name}", env=env_used))
        assert_no_credentials(run_text(run))

    # Restore each into an empty server: identical documents and indexes.
    target = ferretdb_factory(name="s3-target")
    target_uri = h.write_uri_file(tmp_path, target.uri, "target-uri")
    for name, env_used in (("from-env", env), ("from-systemd", sd_env)):
        run = h.expect_ok(h.run_worker(tools, "restore", "--uri-file", target_uri, "--store", store,
                                       "--snapshot", f"node1/{name}", "--drop", env=env_used))
        assert_no_credentials(run_text(run))
        assert h.digest(target.client, [DB]) == want
        assert h.index_specs(target.client, [DB]) == h.index_specs(source.client, [DB])

    # A snapshot of that name exists now: refused, nothing overwritten.
    run = snapshot(tools, source, store, "from-env", env, "--prefix", "node1")
    assert run.returncode != h.EXIT_OK
    assert "already exists" in run.output


def test_multipart_snapshot_is_byte_exact(tools, fresh_db, minio, s3_bucket, tmp_path):
    client = fresh_db.client
    load_random(client, n_docs=40, doc_bytes=512 * 1024)  # ~20 MiB that no codec can shrink
    fresh_db.uri_file = h.write_uri_file(tmp_path, fresh_db.uri)
    store = minio.location(s3_bucket, "big", part_size="5MiB", parallel="3")
    env = env_credentials(tmp_path)
    run = h.expect_ok(snapshot(tools, fresh_db, store, "large", env, "--compression", "none"))
    key = "big/" + run.json()["archive"]

    obj = minio.client.get_object(Bucket=s3_bucket, Key=key)
    data = obj["Body"].read()
    etag = obj["ETag"].strip('"')
    assert len(data) > 4 * PART
    # A multipart object's ETag ends in "-<parts>": it went up as several parts, and S3's
    # ETag is the MD5 of the parts' MD5s, so each part arrived intact.
    parts = [data[i:i + PART] for i in range(0, len(data), PART)]
    assert etag == hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + \
        f"-{len(parts)}"
    manifest = json.loads(minio.client.get_object(Bucket=s3_bucket, Key="big/large.manifest.json")
                          ["Body"].read())
    assert manifest["archive"]["size"] == len(data)
    assert manifest["archive"]["sha256"] == hashlib.sha256(data).hexdigest()

    # Reading back through the driver (ranged GETs) gives the same bytes.
    got = run_tool(env, "get", store, "large.archive").stdout
    assert got == data
    h.expect_ok(h.run_worker(tools, "verify", "--store", store, "--snapshot", "large", env=env))

    # The listing shows both objects with their sizes, relative to the store's prefix.
    listing = run_tool(env, "list", store, "").stdout.decode().split("\n")
    assert f"{len(data)} large.archive" in listing
    assert any(line.endswith(" large.manifest.json") for line in listing)


# ---- concurrent ranged reads --------------------------------------------------------------------

# The reader fetches fixed-size ranges with `parallel` fetcher threads into parallel + 1
# buffers and hands the bytes out in order. MS_TEST_S3_READ_CHUNK (read by
# test-s3-storage-tool only, for tests) makes the chunk 64 KiB so objects of many chunks stay
# small; one object is read with the real 16 MiB chunk too.
CHUNK = 64 * 1024
READ_CHUNK = 16 * 1024 * 1024  # MS_S3_READ_CHUNK


def chunked_env(tmp_path: Path, chunk: int = CHUNK) -> dict:
    return dict(env_credentials(tmp_path), MS_TEST_S3_READ_CHUNK=str(chunk))


def random_bytes(n: int, seed: int) -> bytes:
    out, block = [], hashlib.sha256(b"ranged-%d" % seed).digest()
    for _ in range((n + 31) // 32):
        block = hashlib.sha256(block).digest()
        out.append(block)
    return b"".join(out)[:n]


def test_ranged_reads_are_byte_exact_at_every_size_and_parallelism(minio, s3_bucket, tmp_path):
    env = chunked_env(tmp_path)
    sizes = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7, 37 * CHUNK + 11]
    for i, size in enumerate(sizes):
        data = random_bytes(size, i)
        minio.client.put_object(Bucket=s3_bucket, Key=f"r/obj-{size}", Body=data)
        for parallel in (1, 2, 3, 4):
            got = run_tool(env, "get", minio.location(s3_bucket, "r", parallel=str(parallel)),
                           f"obj-{size}").stdout
            assert len(got) == size, f"size {size}, parallel={parallel}: got {len(got)} bytes"
            assert got == data, f"size {size}, parallel={parallel}: the bytes differ"
    # The real chunk size: 2 chunks and 7 bytes (a multipart object, read by 1 and 4 fetchers).
    data = random_bytes(2 * READ_CHUNK + 7, 99)
    minio.client.upload_fileobj(io.BytesIO(data), s3_bucket, "r/big")
    for parallel in (1, 4):
        got = run_tool(env_credentials(tmp_path), "get",
                       minio.location(s3_bucket, "r", parallel=str(parallel)), "big").stdout
        assert got == data, f"16 MiB chunks, parallel={parallel}: the bytes differ"
    # A missing object is still reported by open.
    cp = run_tool(env, "get", minio.location(s3_bucket, "r"), "missing", check=False)
    assert cp.returncode == 1 and b"no object 'missing'" in cp.stderr, cp.stderr.decode()


def test_object_replaced_mid_read_fails_clearly(minio, s3_bucket, tmp_path):
    # 64 chunks, 2 fetchers: after the first chunk is handed out, at most 2 more are fetched
    # ahead; the object is then replaced, and the next range (If-Match: the first ETag) fails.
    size = 64 * CHUNK
    old, new = random_bytes(size, 1), random_bytes(size, 2)
    minio.client.put_object(Bucket=s3_bucket, Key="m/obj", Body=old)
    out_path = tmp_path / "obj.out"  # a file: a pipe would fill while the tool pauses
    with open(out_path, "wb") as out_file:
        proc = subprocess.Popen([str(TOOL), "get-paused",
                                 minio.location(s3_bucket, "m", parallel="2"), "obj", str(CHUNK)],
                                stdin=subprocess.PIPE, stdout=out_file, stderr=subprocess.PIPE,
                                env=chunked_env(tmp_path))
    try:
        assert proc.stderr.readline() == b"paused\n"
        minio.client.put_object(Bucket=s3_bucket, Key="m/obj", Body=new)
        _, err = proc.communicate(b"\n", timeout=TOOL_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = out_path.read_bytes()
    assert proc.returncode == 1, err.decode()
    assert b"cannot read object 'obj'" in err, err.decode()
    assert b"the object changed while it was being read" in err, err.decode()
    assert len(out) < size and out == old[:len(out)], "bytes of the new object were handed out"


def test_reader_stopped_early_frees_its_fetchers(minio, s3_bucket, tmp_path):
    # The tool frees the reader after N bytes while its fetchers are still busy; an ASan build
    # reports leaks and use-after-free at exit (a non-zero exit and a report on stderr).
    size = 40 * CHUNK + 3
    data = random_bytes(size, 3)
    minio.client.put_object(Bucket=s3_bucket, Key="h/obj", Body=data)
    env = chunked_env(tmp_path)
    for parallel in (1, 4):
        for n in (0, 1, CHUNK, 3 * CHUNK + 5):
            cp = run_tool(env, "head", minio.location(s3_bucket, "h", parallel=str(parallel)),
                          "obj", str(n))
            assert cp.stdout == data[:n], f"parallel={parallel}, {n} bytes"
            assert cp.stderr == b"", cp.stderr.decode()[-3000:]


# ---- download addresses -----------------------------------------------------------------------

def test_presigned_url_downloads_and_expires(minio, s3_bucket, tmp_path):
    env = env_credentials(tmp_path)
    store = minio.location(s3_bucket, "p")
    payload = hashlib.sha256(b"presign").digest() * 3000
    minio.client.put_object(Bucket=s3_bucket, Key="p/dir/snap one.archive", Body=payload)
    url = run_tool(env, "url", store, "dir/snap one.archive", str(PRESIGN_SECONDS)).stdout.decode().strip()
    issued = time.monotonic()
    assert url.startswith(minio.endpoint + f"/{s3_bucket}/p/dir/snap%20one.archive?")
    assert "X-Amz-Expires=2&" in url
    assert SECRET_KEY not in url
    out = tmp_path / "download"
    cp = subprocess.run(["curl", "-sS", "-f", "-o", str(out), url], capture_output=True, timeout=30)
    assert cp.returncode == 0, cp.stderr.decode()
    assert out.read_bytes() == payload

    # After the lifetime (whole seconds on the server's clock, so wait a little longer).
    time.sleep(max(0.0, PRESIGN_SECONDS + 1.5 - (time.monotonic() - issued)))
    cp = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", url],
                        capture_output=True, timeout=30)
    assert cp.stdout.decode() == "403", "an expired URL still downloads"

    # Lifetimes SigV4 cannot express are refused; local stores have no URLs at all.
    cp = run_tool(env, "url", store, "x", str(8 * 24 * 3600), check=False)
    assert cp.returncode == 1 and b"between 1 second and 7 days" in cp.stderr
    cp = run_tool(env, "url", str(tmp_path), "x", "60", check=False)
    assert cp.returncode == 1 and b"no download addresses" in cp.stderr


# ---- stop, stale uploads ------------------------------------------------------------------------

def test_sigterm_during_upload_leaves_nothing(tools, fresh_db, minio, s3_bucket, tmp_path):
    load_random(fresh_db.client, n_docs=80, doc_bytes=512 * 1024, seed=2)  # ~40 MiB
    fresh_db.uri_file = h.write_uri_file(tmp_path, fresh_db.uri)
    store = minio.location(s3_bucket, "stop", part_size="5MiB", parallel="1")
    key = "stop/stopped.archive"
    worker = h.start_worker(tools, "snapshot", "--uri-file", fresh_db.uri_file, "--store", store,
                            "--name", "stopped", "--compression", "none",
                            env=env_credentials(tmp_path))
    try:
        # Stop it once its multipart upload exists, i.e. while parts are going up.
        seen = h.wait_until(lambda: bool(minio.uploads(s3_bucket, key)) or
                            worker.proc.poll() is not None, timeout=120, interval=0.02)
        assert seen and worker.proc.poll() is None, "the snapshot ended before its upload was seen"
        worker.proc.send_signal(signal.SIGTERM)
        run = worker.finish(timeout=60)
    finally:
        worker.kill()
    assert run.returncode == h.EXIT_CANCELLED, run.describe()
    assert minio.uploads(s3_bucket) == [], "a multipart upload was left behind"
    assert minio.keys(s3_bucket) == [], "an object was left behind"


def test_clean_stale_aborts_uploads_under_the_prefix(minio, s3_bucket, tmp_path):
    env = env_credentials(tmp_path)
    c = minio.client
    inside = c.create_multipart_upload(Bucket=s3_bucket, Key="pol/node1/crashed.archive.zst")
    c.upload_part(Bucket=s3_bucket, Key="pol/node1/crashed.archive.zst", PartNumber=1,
                  UploadId=inside["UploadId"], Body=b"x" * 1024)
    outside = c.create_multipart_upload(Bucket=s3_bucket, Key="other/crashed.archive.zst")
    c.put_object(Bucket=s3_bucket, Key="pol/node1/done.archive.zst", Body=b"kept")

    cp = run_tool(env, "clean-stale", minio.location(s3_bucket, "pol"), "node1/")
    assert cp.stdout.decode().strip() == "1"
    left = [(u["Key"], u["UploadId"]) for u in minio.uploads(s3_bucket)]
    assert left == [("other/crashed.archive.zst", outside["UploadId"])]
    assert minio.keys(s3_bucket) == ["pol/node1/done.archive.zst"]
    # Nothing left: a second run finds nothing.
    assert run_tool(env, "clean-stale", minio.location(s3_bucket, "pol"), "").stdout.strip() == b"0"


# ---- errors -----------------------------------------------------------------------------------

def test_wrong_credentials_are_refused_clearly(tools, source, minio, s3_bucket, tmp_path):
    store = minio.location(s3_bucket, "x")
    cases = {
        "wrong secret": env_credentials(tmp_path, secret="not-" + SECRET_KEY[4:]),
        "wrong key id": env_credentials(tmp_path, key_id="mstestNOSUCHKEY"),
    }
    for what, env in cases.items():
        run = snapshot(tools, source, store, "refused", env, progress=True)
        assert run.returncode == h.EXIT_UNREACHABLE, f"{what}: {run.describe()}"
        assert "refused the credentials from the environment" in run.output, what
        assert_no_credentials(run_text(run))
        assert env["AWS_SECRET_ACCESS_KEY"] not in run_text(run)
    assert minio.keys(s3_bucket) == [] and minio.uploads(s3_bucket) == []


def test_missing_bucket_is_named(tools, source, minio, tmp_path):
    run = snapshot(tools, source, minio.location("no-such-bucket-here", "x"),
                   "nobucket", env_credentials(tmp_path), progress=True)
    assert run.returncode == h.EXIT_FAILURE, run.describe()
    assert "bucket 'no-such-bucket-here' does not exist" in run.output
    assert_no_credentials(run_text(run))


def test_credentials_in_the_location_are_refused_unrepeated(tools, source, minio, tmp_path):
    loc = f"s3://{ACCESS_KEY}:{SECRET_KEY}@bucket/x?endpoint={minio.endpoint}"
    run = snapshot(tools, source, loc, "x", s3_env(tmp_path), progress=True)
    assert run.returncode == h.EXIT_USAGE, run.describe()
    assert "never go in a location" in run.output
    assert_no_credentials(run_text(run))


def test_missing_credentials_say_where_to_put_them(tools, source, minio, tmp_path):
    run = snapshot(tools, source, minio.location("bucket", "x"), "x", s3_env(tmp_path))
    assert run.returncode == h.EXIT_USAGE, run.describe()
    assert "no S3 credentials found" in run.output
    assert "CREDENTIALS_DIRECTORY" in run.output or "LoadCredential" in run.output


def test_unreachable_endpoint_fails_fast_with_exit_4(tools, source, tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = f"s3://bucket/x?endpoint=http://127.0.0.1:{port}&connect_timeout=1s&max_attempts=3"
    started = time.monotonic()
    run = snapshot(tools, source, store, "x", env_credentials(tmp_path), progress=True,
                   timeout=120)
    elapsed = time.monotonic() - started
    assert run.returncode == h.EXIT_UNREACHABLE, run.describe()
    assert f"cannot connect to the S3 endpoint http://127.0.0.1:{port}" in run.output
    assert elapsed < UNREACHABLE_LIMIT_SECONDS, f"took {elapsed:.1f}s"
    assert_no_credentials(run_text(run))
