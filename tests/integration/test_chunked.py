"""Chunked snapshots (Format=chunked, engine/chunked.h) through mongosnap-worker, against
FerretDB, a local store and MinIO.

What they promise: a chunked snapshot restores byte for byte, plain or encrypted, local or S3;
the next snapshot of a slightly changed database stores only the changed chunks; the stock
mongorestore restores its export; a missing or damaged chunk is named by verify (with the
snapshots it breaks) and stops a restore --drop before the target changes; garbage collection
removes exactly the chunks no committed snapshot names, never one a snapshot running beside it
needs (many rounds with kills), and steps aside for a live snapshot's marker but not a stale one.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from pathlib import Path

import pytest

import helpers as h
from minio_fixtures import *  # noqa: F401,F403
from minio_fixtures import ACCESS_KEY, SECRET_KEY

DB = "chunkdb"
KEY_HEX = "5e3b6c1e2d4a5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8"
OTHER_KEY_HEX = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
EXIT_USAGE, EXIT_CORRUPT = 2, 3


def load(client, n=12000):
    h.load_simple_dataset(client, DB, {"orders": n, "users": n // 5, "empty": 0}, pad=300)


def key_file(tmp_path: Path, hexkey: str = KEY_HEX, name: str = "key") -> Path:
    p = tmp_path / name
    p.write_text(hexkey + "\n")
    p.chmod(0o600)
    return p


def snap(tools, uri_file, store, name, *extra, prefix="pol", env=None):
    run = h.run_worker(tools, "snapshot", "--uri-file", uri_file, "--store", store, "--prefix",
                       prefix, "--name", name, "--format", "chunked", "--json", *extra, env=env)
    h.expect_ok(run)
    return json.loads(run.stdout.strip().splitlines()[-1])


def chunk_files(store: Path, prefix="pol"):
    root = store / "_chunks" / prefix
    return sorted(p for p in root.glob("??/*") if p.is_file()) if root.exists() else []


@pytest.fixture
def src(fresh_db, tmp_path):
    load(fresh_db.client)
    fresh_db.uri_file = h.write_uri_file(tmp_path, fresh_db.uri)
    return fresh_db


@pytest.fixture
def target(ferretdb_factory, tmp_path):
    t = ferretdb_factory(name="chunk-target")
    t.uri_file = h.write_uri_file(tmp_path, t.uri, "target-uri")
    return t


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_round_trip_local(tools, src, target, tmp_path, encrypted):
    store = tmp_path / "store"
    store.mkdir()
    extra = ["--key-file", key_file(tmp_path)] if encrypted else []
    res = snap(tools, src.uri_file, store, "a", *extra)
    assert res["format"] == "chunked" and res["chunks"] == res["chunks_stored"] > 10
    manifest = h.read_manifest(store, "a", "pol")
    assert manifest["archive"]["format"] == "chunked"
    assert manifest["archive"]["key"] == "pol/a.index"
    assert not list(store.glob("pol/*.archive*")), "a chunked snapshot has no archive object"
    if encrypted:
        # neither the chunks nor the index hold the plaintext
        stored = [p.read_bytes() for p in chunk_files(store)] + [(store / "pol/a.index").read_bytes()]
        assert all(b.startswith(b"MSENC1") for b in stored)
        assert not any(b"orders" in b or b"pad" in b for b in stored)
    h.restore(tools, target.uri_file, "--store", store, "--snapshot", "pol/a", *extra)
    assert h.digest(target.client, [DB]) == h.digest(src.client, [DB])
    h.expect_ok(h.run_worker(tools, "verify", "--store", store, "--snapshot", "pol/a", *extra))
    if encrypted:
        run = h.run_worker(tools, "restore", "--uri-file", target.uri_file, "--store", store,
                           "--snapshot", "pol/a", "--drop")
        assert run.returncode == EXIT_USAGE and "key" in run.output, run.describe()
        run = h.run_worker(tools, "verify", "--store", store, "--snapshot", "pol/a",
                           "--key-file", key_file(tmp_path, OTHER_KEY_HEX, "other"))
        assert run.returncode == EXIT_USAGE, run.describe()


def test_next_snapshot_stores_only_what_changed(tools, src, target, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    first = snap(tools, src.uri_file, store, "a")
    coll = src.client[DB]["orders"]
    for i in range(0, 3000, 300):  # 10 of 3,000 documents changed, 5 added, 5 removed
        coll.update_one({"_id": i}, {"$set": {"changed": True}})
    coll.insert_many([{"_id": 1_000_000 + i, "new": i} for i in range(5)])
    coll.delete_many({"_id": {"$in": [5, 6, 7, 8, 9]}})
    second = snap(tools, src.uri_file, store, "b")
    m2 = h.read_manifest(store, "b", "pol")
    assert second["chunks_stored"] < first["chunks_stored"] / 4, (first, second)
    assert m2["archive"]["chunks"]["stored_bytes"] < h.read_manifest(store, "a", "pol")["archive"]["chunks"]["stored_bytes"] / 4
    h.restore(tools, target.uri_file, "--store", store, "--snapshot", "pol/b")
    assert h.digest(target.client, [DB]) == h.digest(src.client, [DB])


def test_export_restores_with_stock_mongorestore(tools, src, target, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    k = key_file(tmp_path)
    snap(tools, src.uri_file, store, "a", "--key-file", k)
    out = tmp_path / "dump.archive"
    run = h.run_worker(tools, "export", "--store", store, "--snapshot", "pol/a", "--key-file", k,
                       "--output", out)
    h.expect_ok(run)
    cp = tools.run("mongorestore", "--uri", target.uri, "--noIndexRestore", f"--archive={out}")
    assert "0 document(s) failed to restore" in cp.stderr, cp.stderr[-2000:]
    assert h.data_digest(target.client, [DB]) == h.data_digest(src.client, [DB])
    # standard output too, byte for byte the same
    with open(tmp_path / "stdout.archive", "wb") as f:
        p = subprocess.run([str(tools.require("worker")), "export", "--store", str(store),
                            "--snapshot", "pol/a", "--key-file", str(k)], stdout=f,
                           stderr=subprocess.PIPE, timeout=120)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "stdout.archive").read_bytes() == out.read_bytes()


def test_missing_and_damaged_chunks_are_named(tools, src, target, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    snap(tools, src.uri_file, store, "a")
    snap(tools, src.uri_file, store, "b")  # shares (nearly) every chunk with a
    victim = chunk_files(store)[len(chunk_files(store)) // 2]
    chunk_id = victim.name
    # damaged: one byte flipped
    h.flip_byte(victim, 12)
    run = h.run_worker(tools, "verify", "--store", store, "--snapshot", "pol/b")
    assert run.returncode == EXIT_CORRUPT, run.describe()
    assert chunk_id in run.output and "damaged" in run.output
    assert "breaks snapshots" in run.output and "a" in run.output.split("breaks snapshots")[-1]
    # restore --drop refuses before the target changes
    target.client[DB]["keepme"].insert_one({"_id": 1})
    before = h.digest(target.client, [DB])
    run = h.run_worker(tools, "restore", "--uri-file", target.uri_file, "--store", store,
                       "--snapshot", "pol/b", "--drop")
    assert run.returncode == EXIT_CORRUPT, run.describe()
    assert h.digest(target.client, [DB]) == before
    # missing: found by the cheap check too, naming both snapshots
    victim.unlink()
    for extra in ([], ["--metadata-only"]):
        run = h.run_worker(tools, "verify", "--store", store, "--snapshot", "pol/a", *extra)
        assert run.returncode == EXIT_CORRUPT, run.describe()
        assert chunk_id in run.output and "missing" in run.output
        users = run.output.split("breaks snapshots")[-1]
        assert "a" in users and "b" in users, run.output
    run = h.run_worker(tools, "export", "--store", store, "--snapshot", "pol/a", "--output",
                       tmp_path / "x.archive")
    assert run.returncode == EXIT_CORRUPT and "incomplete" in run.output, run.describe()


def test_gc_removes_exactly_the_unnamed_chunks(tools, src, target, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    snap(tools, src.uri_file, store, "a")
    src.client[DB]["orders"].update_many({"_id": {"$lt": 600}}, {"$set": {"v": 2}})
    snap(tools, src.uri_file, store, "b")
    before = set(p.name for p in chunk_files(store))
    run = h.run_worker(tools, "remove", "--store", store, "--key", "pol/a.manifest.json", "--key",
                       "pol/a.index", "--gc", "--prefix", "pol", "--json")
    h.expect_ok(run)
    gc = json.loads(run.stdout.strip().splitlines()[-1])["gc"]
    after = set(p.name for p in chunk_files(store))
    assert gc["removed"] == len(before - after) > 0 and not gc["skipped"]
    assert gc["referenced"] == len(after)
    h.expect_ok(h.run_worker(tools, "verify", "--store", store, "--snapshot", "pol/b"))
    h.restore(tools, target.uri_file, "--store", store, "--snapshot", "pol/b")
    assert h.digest(target.client, [DB]) == h.digest(src.client, [DB])
    # nothing left to name: everything goes
    h.expect_ok(h.run_worker(tools, "remove", "--store", store, "--key", "pol/b.manifest.json",
                             "--key", "pol/b.index", "--gc", "--prefix", "pol"))
    assert chunk_files(store) == []


def test_gc_needs_the_key_for_encrypted_indexes(tools, src, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    snap(tools, src.uri_file, store, "a", "--key-file", key_file(tmp_path))
    n = len(chunk_files(store))
    run = h.run_worker(tools, "gc", "--store", store, "--prefix", "pol")
    assert run.returncode == EXIT_USAGE and "nothing was removed" in run.output, run.describe()
    assert len(chunk_files(store)) == n
    h.expect_ok(h.run_worker(tools, "gc", "--store", store, "--prefix", "pol", "--key-file",
                             key_file(tmp_path)))
    assert len(chunk_files(store)) == n


def test_gc_steps_aside_for_a_live_snapshot_marker_not_a_stale_one(tools, src, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    snap(tools, src.uri_file, store, "a")
    # an orphan chunk (as a killed snapshot leaves) and a live snapshot marker
    orphan = store / "_chunks/pol/ff" / ("ff" + "0" * 62)
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"\x28\xb5\x2f\xfd" + b"x" * 20)
    temp = store / "_chunks/pol/ff" / (".tmp-ff" + "1" * 20 + "-abcdef")  # a killed write
    temp.write_bytes(b"partial")
    locks = store / "_chunks/pol/locks"
    locks.mkdir(parents=True, exist_ok=True)
    marker = locks / "snapshot-running-abc123"
    marker.write_text("{}\n")
    run = h.run_worker(tools, "gc", "--store", store, "--prefix", "pol", "--json")
    h.expect_ok(run)
    gc = json.loads(run.stdout.strip().splitlines()[-1])["gc"]
    assert gc["skipped"] and orphan.exists()
    # 16 minutes old: a crash's leftover, ignored and removed
    old = time.time() - 16 * 60
    os.utime(marker, (old, old))
    run = h.run_worker(tools, "gc", "--store", store, "--prefix", "pol", "--json")
    gc = json.loads(run.stdout.strip().splitlines()[-1])["gc"]
    assert not gc["skipped"] and gc["removed"] == 1 and gc["stale_markers_removed"] == 1
    assert gc["temporaries_removed"] == 1 and not temp.exists()
    assert not orphan.exists() and not marker.exists()
    h.expect_ok(h.run_worker(tools, "verify", "--store", store, "--snapshot", "pol/a"))


GC_RACE_ROUNDS = int(os.environ.get("MONGOSNAP_GC_RACE_ROUNDS", "10"))


def test_gc_racing_snapshots_never_removes_a_needed_chunk(tools, src, tmp_path):
    """Rounds of: change some documents, then a snapshot and a collection started together (in
    a random order, a random delay apart), either killed at a random moment now and then, and
    retention removing the oldest snapshot before the collection. After every round every
    committed snapshot must read whole (verify reads every chunk)."""
    store = tmp_path / "store"
    store.mkdir()
    snap(tools, src.uri_file, store, "s000")
    r = random.Random(int(os.environ.get("MONGOSNAP_GC_RACE_SEED", "7")))
    worker = str(tools.require("worker"))
    kills = 0
    for rnd in range(1, GC_RACE_ROUNDS + 1):
        lo = r.randrange(0, 11_900)  # a few documents change (FerretDB updates are slow)
        src.client[DB]["orders"].update_many({"_id": {"$gte": lo, "$lt": lo + 20}}, {"$set": {"round": rnd}})
        manifests = sorted(p.name[: -len(".manifest.json")] for p in (store / "pol").glob("*.manifest.json"))
        if len(manifests) > 2:  # retention: the oldest goes first
            for suffix in (".manifest.json", ".index"):
                (store / "pol" / (manifests[0] + suffix)).unlink(missing_ok=True)
        name = f"s{rnd:03d}"
        snap_cmd = [worker, "snapshot", "--uri-file", str(src.uri_file), "--store", str(store),
                    "--prefix", "pol", "--name", name, "--format", "chunked"]
        gc_cmd = [worker, "gc", "--store", str(store), "--prefix", "pol"]
        first, second = (snap_cmd, gc_cmd) if r.random() < 0.5 else (gc_cmd, snap_cmd)
        p1 = subprocess.Popen(first, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(r.uniform(0, 0.3))
        p2 = subprocess.Popen(second, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if r.random() < 0.3:
            time.sleep(r.uniform(0, 0.5))
            victim = r.choice([p1, p2])
            victim.kill()
            kills += 1
        for p in (p1, p2):
            try:
                p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
                pytest.fail(f"round {rnd}: a worker did not finish")
        # every committed snapshot whole
        for m in sorted((store / "pol").glob("*.manifest.json")):
            key = "pol/" + m.name[: -len(".manifest.json")]
            run = h.run_worker(tools, "verify", "--store", store, "--snapshot", key)
            assert run.returncode == 0, f"round {rnd} (seed {os.environ.get('MONGOSNAP_GC_RACE_SEED', '7')}): {key}: {run.output[-1500:]}"
    print(f"{GC_RACE_ROUNDS} rounds, {kills} kills")


def s3_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(HOME=str(home), AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    return env


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_round_trip_s3(tools, src, target, minio, s3_bucket, tmp_path, encrypted):
    env = s3_env(tmp_path)
    store = minio.location(s3_bucket)
    extra = ["--key-file", str(key_file(tmp_path))] if encrypted else []
    first = snap(tools, src.uri_file, store, "a", *extra, env=env)
    src.client[DB]["users"].update_one({"_id": 3}, {"$set": {"x": 1}})
    second = snap(tools, src.uri_file, store, "b", *extra, env=env)
    assert second["chunks_stored"] < first["chunks_stored"] / 4
    keys = minio.keys(s3_bucket)
    assert "pol/b.index" in keys and any(k.startswith("_chunks/pol/") for k in keys)
    h.expect_ok(h.run_worker(tools, "restore", "--uri-file", target.uri_file, "--store", store,
                             "--snapshot", "pol/b", *extra, env=env))
    assert h.digest(target.client, [DB]) == h.digest(src.client, [DB])
    h.expect_ok(h.run_worker(tools, "remove", "--store", store, "--key", "pol/a.manifest.json",
                             "--key", "pol/a.index", "--gc", "--prefix", "pol", *extra, env=env))
    h.expect_ok(h.run_worker(tools, "verify", "--store", store, "--snapshot", "pol/b", *extra,
                             env=env))
    text = "\n".join(minio.keys(s3_bucket))
    assert "locks/" not in text, "markers left behind"


def test_snapshot_waits_for_a_live_collector_not_a_stale_one(tools, src, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    snap(tools, src.uri_file, store, "a")
    locks = store / "_chunks/pol/locks"
    locks.mkdir(parents=True, exist_ok=True)
    marker = locks / "gc-abc123"
    marker.write_text("{}\n")
    worker = str(tools.require("worker"))
    p = subprocess.Popen([worker, "snapshot", "--uri-file", str(src.uri_file), "--store", str(store),
                          "--prefix", "pol", "--name", "b", "--format", "chunked"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    assert p.poll() is None and not (store / "pol/b.manifest.json").exists(), "did not wait"
    marker.unlink()  # the collector finished
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert "waiting for the garbage collection" in err
    # a marker a killed collector left 6 minutes ago does not hold a snapshot up
    locks.mkdir(parents=True, exist_ok=True)
    marker.write_text("{}\n")
    old = time.time() - 6 * 60
    os.utime(marker, (old, old))
    run = h.run_worker(tools, "snapshot", "--uri-file", src.uri_file, "--store", store, "--prefix",
                       "pol", "--name", "c", "--format", "chunked")
    h.expect_ok(run)
    assert "waiting for the garbage collection" not in run.output
