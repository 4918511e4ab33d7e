"""Point-in-time recovery against FerretDB with its oplog: the follower (mongosnap-worker follow)
turns the oplog into slices while a writer inserts, updates and deletes and snapshots are
taken; restores to many instants must each equal, byte for byte, the source's state at that
instant rebuilt from the source's own oplog.

The follower is killed with SIGKILL half-way and started again: the chain must continue with no
gap and no entry twice (verify-chain counts every entry and checks continuity; the count must
equal the source's entries in the chain's range).
"""

from __future__ import annotations

import datetime
import json
import os
import random
import signal
import threading
import time

import bson
import pytest
from bson import Timestamp

import helpers as h
from minio_fixtures import *  # noqa: F401,F403
from toxiproxy_fixtures import *  # noqa: F401,F403
from test_engine_oplog import apply_update  # noqa: F401  (used by state_at)
from test_engine_oplog import live_entries, state_at, ts_tuple

LIVE_DB, LIVE_COLL = "live", "items"
PREFIX = "pol"
SLICE_SEC = "2"
MAX_U32 = 2**32 - 1


class TimedWriter(threading.Thread):
    """Inserts, $set updates and deletes on live.items until stopped (bounded in count)."""

    def __init__(self, client, first_id: int, seed: int = 7, max_ops: int = 4000):
        super().__init__(daemon=True)
        self.coll = client[LIVE_DB][LIVE_COLL]
        self.next_id = first_id
        self.alive = list(range(first_id))
        self.stop_event = threading.Event()
        self.ops = 0
        self.max_ops = max_ops
        self.error = None
        self.rnd = random.Random(seed)

    def run(self) -> None:
        try:
            while self.ops < self.max_ops and not self.stop_event.is_set():
                kind = self.rnd.randrange(3)
                if kind == 0 or len(self.alive) < 10:
                    self.coll.insert_one({"_id": self.next_id, "n": 0, "pad": "p" * 40})
                    self.alive.append(self.next_id)
                    self.next_id += 1
                elif kind == 1:
                    self.coll.update_one({"_id": self.rnd.choice(self.alive)},
                                         {"$set": {"n": self.ops, "tag": f"t{self.ops}"}})
                else:
                    self.coll.delete_one({"_id": self.alive.pop(self.rnd.randrange(len(self.alive)))})
                self.ops += 1
                time.sleep(0.01)
        except Exception as e:  # noqa: BLE001 - reported by stop()
            self.error = e

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=30)
        assert self.error is None, f"the writer failed: {self.error!r}"


def make_source(server):
    client = server.client
    client.local.create_collection("oplog.rs", capped=True, size=256 * 1024 * 1024)
    h.load_simple_dataset(client, "bulk", {"orders": 300}, pad=50)
    client[LIVE_DB][LIVE_COLL].insert_many([{"_id": i, "n": 0, "pad": "p" * 40} for i in range(100)])
    return server


def s3_env(minio, home):
    """The worker's environment for MinIO: its keys, no inherited AWS settings or ~/.aws."""
    return dict({k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
                HOME=str(home), AWS_ACCESS_KEY_ID=minio.access_key,
                AWS_SECRET_ACCESS_KEY=minio.secret_key)


def start_follower(tools, uri_file, store, *extra):
    return h.start_worker(tools, "follow", "--uri-file", uri_file, "--store", store, "--prefix", PREFIX,
                          "--slice-sec", SLICE_SEC, "--json", *extra)


def pos(value) -> tuple:
    return h.oplog_position(value)


def iso(t: int) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def all_ts(client) -> list:
    return sorted(ts_tuple(e["ts"]) for e in client.local["oplog.rs"].find({}, {"ts": 1}))


def restore_to(tools, target_uri, store, when: str, k: int):
    return h.run_worker(tools, "restore", "--uri-file", target_uri, "--store", store, "--prefix", PREFIX,
                        "--time", when, "--ns-include", f"{LIVE_DB}.*", "--ns-from", f"{LIVE_DB}.*",
                        "--ns-to", f"r{k}.*", "--json")


def test_restore_to_any_instant_across_snapshots_and_a_follower_crash(tools, fresh_db, ferretdb_factory,
                                                                      tmp_path):
    source = make_source(fresh_db)
    client = source.client
    store = tmp_path / "store"
    store.mkdir()
    uri = h.write_uri_file(tmp_path, source.uri)

    writer = TimedWriter(source.new_client(), first_id=100)
    follower = start_follower(tools, uri, store)
    writer.start()
    try:
        assert h.wait_until(lambda: writer.ops >= 30 or writer.error, 30), "the writer does not write"
        h.snapshot(tools, uri, store, "a", "--prefix", PREFIX)
        time.sleep(3)
        # SIGKILL: nothing is committed for what it had read; the next follower reads it again.
        follower.proc.send_signal(signal.SIGKILL)
        killed = follower.finish()
        assert killed.returncode == -signal.SIGKILL
        time.sleep(1)
        follower = start_follower(tools, uri, store)
        h.snapshot(tools, uri, store, "b", "--prefix", PREFIX)
        time.sleep(3)
    finally:
        writer.stop()
    last_write = all_ts(client)[-1]
    time.sleep(4)  # an idle period: the follower claims it with an idle slice
    follower.proc.send_signal(signal.SIGTERM)
    run = follower.finish()
    h.expect_ok(run)
    result = run.json()
    assert result["gaps"] == 0
    assert pos(result["position"]) >= last_write, "the follower stopped before storing the last write"

    chain = h.expect_ok(h.run_worker(tools, "verify-chain", "--store", store, "--prefix", PREFIX, "--json")).json()
    assert chain["damaged"] == 0 and chain["gaps"] == 0, chain
    assert len(chain["chains"]) == 1
    start, end = pos(chain["chains"][0]["from"]), pos(chain["chains"][0]["to"])
    assert end >= last_write
    # Every entry of the source in the chain's range, once: no gap, no repeat across the kill.
    source_ts = all_ts(client)
    assert chain["entries"] == sum(1 for t in source_ts if start < t <= end)

    a_end = pos(h.read_manifest(store, "a", prefix=PREFIX)["consistency"]["oplog_end"])
    b_end = pos(h.read_manifest(store, "b", prefix=PREFIX)["consistency"]["oplog_end"])
    assert start <= a_end < b_end <= last_write
    entries = live_entries(client)
    live_ts = [ts_tuple(e["ts"]) for e in entries]
    after_a = [t for t in live_ts if a_end < t <= last_write]
    assert len(after_a) >= 40, f"only {len(after_a)} writes after snapshot a"
    before_b = max(t for t in source_ts if t < b_end)
    rnd = random.Random(11)
    targets = [
        ("a's end", f"{a_end[0]}:{a_end[1]}", a_end),
        ("a second after a's end", iso(a_end[0] + 1), (a_end[0] + 1, MAX_U32)),
        ("just before b's end", f"{before_b[0]}:{before_b[1]}", before_b),
        ("b's end", f"{b_end[0]}:{b_end[1]}", b_end),
        ("the last write, in the newest slices", f"{last_write[0]}:{last_write[1]}", last_write),
        ("the idle claim's end", f"{end[0]}:{end[1]}", end),
    ] + [(f"random entry {k}", f"{t[0]}:{t[1]}", t) for k, t in enumerate(rnd.sample(after_a, 3))]

    target = ferretdb_factory(name="pitr-target")
    target_uri = h.write_uri_file(tmp_path, target.uri, "target-uri")
    for k, (what, when, until) in enumerate(targets):
        run = restore_to(tools, target_uri, store, when, k)
        assert run.returncode == h.EXIT_OK, f"{what}: {run.describe()}"
        got = h.raw_docs(target.client[f"r{k}"][LIVE_COLL])
        want = state_at(entries, until)
        assert got == want, f"restored to {what} ({when}): {len(got)} documents, expected {len(want)}"

    # A time no snapshot and chain reach is refused before anything is touched.
    before_a = max(t for t in source_ts if t < a_end)
    run = restore_to(tools, target_uri, store, f"{before_a[0]}:{before_a[1]}", 99)
    assert run.returncode == h.EXIT_USAGE, run.describe()
    assert "restorable ranges" in run.output and "Nothing was changed" in run.output
    assert "r99" not in target.client.list_database_names()


def test_a_stopped_follower_commits_what_it_read(tools, fresh_db, tmp_path):
    """With a slice period far longer than the test, only the stop can commit: everything read
    must be in the one slice it commits."""
    source = make_source(fresh_db)
    store = tmp_path / "store"
    store.mkdir()
    uri = h.write_uri_file(tmp_path, source.uri)
    follower = h.start_worker(tools, "follow", "--uri-file", uri, "--store", store, "--prefix", PREFIX,
                              "--slice-sec", "600", "--json")
    time.sleep(1.5)
    coll = source.client[LIVE_DB][LIVE_COLL]
    for i in range(50):
        coll.insert_one({"_id": 1000 + i})
    last = all_ts(source.client)[-1]
    time.sleep(1.5)  # the follower reads them
    follower.proc.send_signal(signal.SIGTERM)
    result = h.expect_ok(follower.finish()).json()
    assert result["slices"] == 1 and result["entries"] == 50, result
    assert pos(result["position"]) == last
    listed = h.expect_ok(h.run_worker(tools, "list-slices", "--store", store, "--prefix", PREFIX,
                                      "--json", progress=True))
    slices = [e for e in listed.events if e.get("event") == "slice"]
    assert len(slices) == 1 and pos(slices[0]["end"]) == last


def test_a_damaged_slice_is_found_and_refuses_the_restore(tools, fresh_db, ferretdb_factory, tmp_path):
    source = make_source(fresh_db)
    store = tmp_path / "store"
    store.mkdir()
    uri = h.write_uri_file(tmp_path, source.uri)
    h.snapshot(tools, uri, store, "a", "--prefix", PREFIX)
    follower = start_follower(tools, uri, store)
    time.sleep(1.5)
    coll = source.client[LIVE_DB][LIVE_COLL]
    for i in range(30):
        coll.insert_one({"_id": 2000 + i})
    last = all_ts(source.client)[-1]
    time.sleep(1.5)
    follower.proc.send_signal(signal.SIGTERM)
    h.expect_ok(follower.finish())
    archives = sorted(p for p in (store / PREFIX / "oplog").iterdir() if ".oplog" in p.name)
    data_slices = [p for p in archives if p.stat().st_size > 200]
    assert data_slices, archives
    victim = data_slices[0]
    h.flip_byte(victim, victim.stat().st_size // 2)

    run = h.run_worker(tools, "verify-chain", "--store", store, "--prefix", PREFIX)
    assert run.returncode == h.EXIT_CORRUPT, run.describe()
    assert victim.name in run.output

    target = ferretdb_factory(name="pitr-damaged")
    target_uri = h.write_uri_file(tmp_path, target.uri, "target-uri")
    run = h.run_worker(tools, "restore", "--uri-file", target_uri, "--store", store, "--prefix", PREFIX,
                       "--time", f"{last[0]}:{last[1]}", "--drop")
    assert run.returncode == h.EXIT_CORRUPT, run.describe()
    assert "nothing was dropped or changed" in run.output
    assert LIVE_DB not in target.client.list_database_names()
    # Without --drop too: the damaged slice is found before the snapshot's documents go in.
    run = h.run_worker(tools, "restore", "--uri-file", target_uri, "--store", store, "--prefix", PREFIX,
                       "--time", f"{last[0]}:{last[1]}")
    assert run.returncode == h.EXIT_CORRUPT, run.describe()
    assert "nothing was changed in the target" in run.output
    assert LIVE_DB not in target.client.list_database_names()


def test_follower_without_an_oplog_says_so(tools, fresh_db, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    uri = h.write_uri_file(tmp_path, fresh_db.uri)
    run = h.run_worker(tools, "follow", "--uri-file", uri, "--store", store, "--prefix", PREFIX)
    assert run.returncode == h.EXIT_FAILURE, run.describe()
    assert "no oplog" in run.output and "replica set" in run.output
    assert not (store / PREFIX / "oplog").exists() or not any((store / PREFIX / "oplog").iterdir())


def test_an_oplog_that_rolled_over_is_a_gap_not_papered_over(tools, ferretdb_factory, tmp_path):
    """A small capped oplog, trimmed every second, rolls over while the follower is stopped: the
    next follower records a gap and starts a new chain; times in the gap are refused, and the
    next snapshot begins a new restorable range."""
    server = ferretdb_factory(name="rollover", extra_args=("--test-capped-cleanup-interval=1s",
                                                           "--test-capped-cleanup-percentage=50"))
    client = server.client
    client.local.create_collection("oplog.rs", capped=True, size=32 * 1024)
    coll = client[LIVE_DB][LIVE_COLL]
    store = tmp_path / "store"
    store.mkdir()
    uri = h.write_uri_file(tmp_path, server.uri)
    coll.insert_one({"_id": 0})
    h.snapshot(tools, uri, store, "before", "--prefix", PREFIX)
    follower = start_follower(tools, uri, store)
    time.sleep(1)
    for i in range(1, 6):
        coll.insert_one({"_id": i})
    time.sleep(2.5)
    follower.proc.send_signal(signal.SIGTERM)
    first = h.expect_ok(follower.finish()).json()
    stored = pos(first["position"])

    # While nobody follows, far more than the oplog holds is written, and trimmed.
    for i in range(6, 600):
        coll.insert_one({"_id": i, "pad": "x" * 200})
    assert h.wait_until(lambda: all_ts(client)[0] > stored, 30), "the oplog never rolled over"

    follower = start_follower(tools, uri, store)
    assert follower.wait_for_event(lambda e: e.get("event") == "gap", 30), "no gap event"
    h.snapshot(tools, uri, store, "after", "--prefix", PREFIX)
    time.sleep(1)
    coll.insert_one({"_id": 10_000})
    last = all_ts(client)[-1]
    time.sleep(2.5)
    follower.proc.send_signal(signal.SIGTERM)
    second = h.expect_ok(follower.finish()).json()
    assert second["gaps"] == 1, second

    chain = h.expect_ok(h.run_worker(tools, "verify-chain", "--store", store, "--prefix", PREFIX,
                                     "--json")).json()
    assert chain["gaps"] == 1 and len(chain["chains"]) == 2, chain
    gap_from, gap_to = pos(chain["chains"][0]["to"]), pos(chain["chains"][1]["from"])
    assert gap_from == stored < gap_to

    target = ferretdb_factory(name="rollover-target")
    target_uri = h.write_uri_file(tmp_path, target.uri, "target-uri")
    inside = (stored[0], stored[1] + 1)
    run = restore_to(tools, target_uri, store, f"{inside[0]}:{inside[1]}", 1)
    assert run.returncode == h.EXIT_USAGE and "restorable ranges" in run.output, run.describe()
    run = restore_to(tools, target_uri, store, f"{last[0]}:{last[1]}", 2)
    assert run.returncode == h.EXIT_OK, run.describe()
    ids = sorted(d["_id"] for d in target.client["r2"][LIVE_COLL].find({}, {"_id": 1}))
    assert ids == list(range(600)) + [10_000]


def test_slices_before_the_oldest_snapshot_go_with_it(tools, fresh_db, ferretdb_factory, tmp_path):
    """Retention removes snapshot a (its manifest first, as the agent does): the follower then
    removes the slices that end at or before the start of the oldest snapshot left (b), and
    keeps every one a restore after b needs."""
    source = make_source(fresh_db)
    client = source.client
    store = tmp_path / "store"
    store.mkdir()
    uri = h.write_uri_file(tmp_path, source.uri)
    follower = h.start_worker(tools, "follow", "--uri-file", uri, "--store", store, "--prefix", PREFIX,
                              "--slice-sec", "1", "--json")
    writer = TimedWriter(source.new_client(), first_id=100, seed=3)
    writer.start()
    try:
        time.sleep(1.5)
        h.snapshot(tools, uri, store, "a", "--prefix", PREFIX)
        time.sleep(3)
        h.snapshot(tools, uri, store, "b", "--prefix", PREFIX)
        b_start = pos(h.read_manifest(store, "b", prefix=PREFIX)["consistency"]["oplog_start"])
        before = sorted(p.name for p in (store / PREFIX / "oplog").glob("*.slice.json"))
        assert any(h.slice_end(n) <= b_start for n in before), before
        # Retention's order: the manifest, then the archive.
        h.manifest_path(store, "a", prefix=PREFIX).unlink()
        h.archive_path(store, "a", prefix=PREFIX).unlink()
        pruned = follower.wait_for_event(lambda e: e.get("event") == "pruned", 40)
        assert pruned, "the follower never removed the slices snapshot a needed"
        time.sleep(2)
    finally:
        writer.stop()
    last = all_ts(client)[-1]
    time.sleep(2)
    follower.proc.send_signal(signal.SIGTERM)
    h.expect_ok(follower.finish())
    assert pos(pruned["before"]) == b_start
    left = sorted(p.name for p in (store / PREFIX / "oplog").glob("*.slice.json"))
    assert left and all(h.slice_end(n) > b_start for n in left), left
    # No archive was left behind without its manifest.
    archives = [p for p in (store / PREFIX / "oplog").iterdir() if ".oplog" in p.name]
    assert len(archives) == len(left), (archives, left)
    chain = h.expect_ok(h.run_worker(tools, "verify-chain", "--store", store, "--prefix", PREFIX,
                                     "--json")).json()
    assert chain["damaged"] == 0 and chain["gaps"] == 0, chain

    target = ferretdb_factory(name="pruned-target")
    target_uri = h.write_uri_file(tmp_path, target.uri, "target-uri")
    run = restore_to(tools, target_uri, store, f"{last[0]}:{last[1]}", 1)
    assert run.returncode == h.EXIT_OK, run.describe()
    assert h.raw_docs(target.client["r1"][LIVE_COLL]) == state_at(live_entries(client), last)




def test_point_in_time_on_s3_encrypted(tools, fresh_db, ferretdb_factory, minio, s3_bucket, tmp_path):
    """The same chain on MinIO with encrypted slices: follow, snapshot, restore to the last write
    (and a wrong key refused before anything changes)."""
    env = s3_env(minio, tmp_path)
    source = make_source(fresh_db)
    client = source.client
    store = minio.location(s3_bucket, "pitr")
    key = tmp_path / "key"
    key.write_text(os.urandom(32).hex())
    other = tmp_path / "other-key"
    other.write_text(os.urandom(32).hex())
    uri = h.write_uri_file(tmp_path, source.uri)
    h.expect_ok(h.run_worker(tools, "snapshot", "--uri-file", uri, "--store", store, "--prefix", PREFIX,
                             "--name", "a", "--key-file", key, env=env))
    follower = h.start_worker(tools, "follow", "--uri-file", uri, "--store", store, "--prefix", PREFIX,
                              "--slice-sec", "1", "--key-file", key, "--json", env=env)
    time.sleep(1.5)
    for i in range(300, 340):
        client[LIVE_DB][LIVE_COLL].insert_one({"_id": i, "n": i})
        client[LIVE_DB][LIVE_COLL].update_one({"_id": i - 200}, {"$set": {"n": -i}})
    last = all_ts(client)[-1]
    time.sleep(2.5)
    follower.proc.send_signal(signal.SIGTERM)
    h.expect_ok(follower.finish())
    keys = minio.keys(s3_bucket, "pitr/pol/oplog/")
    assert any(k.endswith(".slice.json") for k in keys)
    assert all(".oplog.zst.enc" in k for k in keys if ".oplog" in k), keys

    target = ferretdb_factory(name="s3-pitr-target")
    target_uri = h.write_uri_file(tmp_path, target.uri, "target-uri")
    args = ["restore", "--uri-file", target_uri, "--store", store, "--prefix", PREFIX,
            "--time", f"{last[0]}:{last[1]}", "--ns-include", f"{LIVE_DB}.*", "--drop"]
    wrong = h.run_worker(tools, *args, "--key-file", other, env=env)
    assert wrong.returncode == h.EXIT_USAGE, wrong.describe()
    assert LIVE_DB not in target.client.list_database_names()
    h.expect_ok(h.run_worker(tools, *args, "--key-file", key, env=env))
    assert h.raw_docs(target.client[LIVE_DB][LIVE_COLL]) == h.raw_docs(client[LIVE_DB][LIVE_COLL])
    chain = h.expect_ok(h.run_worker(tools, "verify-chain", "--store", store, "--prefix", PREFIX,
                                     "--key-file", key, "--json", env=env)).json()
    assert chain["damaged"] == 0 and chain["gaps"] == 0, chain

    # Retention on S3: a later snapshot b, a's objects removed (manifest first): the follower's
    # next refresh removes the slices that end at or before b's start, manifest and archive.
    follower = h.start_worker(tools, "follow", "--uri-file", uri, "--store", store, "--prefix", PREFIX,
                              "--slice-sec", "1", "--key-file", key, "--json", env=env)
    writer = TimedWriter(source.new_client(), first_id=1000, seed=4)
    writer.start()
    try:
        time.sleep(1.5)
        h.expect_ok(h.run_worker(tools, "snapshot", "--uri-file", uri, "--store", store, "--prefix",
                                 PREFIX, "--name", "b", "--key-file", key, env=env))
        for k in minio.keys(s3_bucket, f"pitr/{PREFIX}/a."):
            if k.endswith(".manifest.json"):
                minio.client.delete_object(Bucket=s3_bucket, Key=k)
        for k in minio.keys(s3_bucket, f"pitr/{PREFIX}/a."):
            minio.client.delete_object(Bucket=s3_bucket, Key=k)
        pruned = follower.wait_for_event(lambda e: e.get("event") == "pruned", 40)
        assert pruned, "no slice was removed on S3"
    finally:
        writer.stop()
        follower.proc.send_signal(signal.SIGTERM)
        h.expect_ok(follower.finish())
    b_start = pos(json.loads(minio.client.get_object(
        Bucket=s3_bucket, Key=f"pitr/{PREFIX}/b.manifest.json")["Body"].read())
        ["consistency"]["oplog_start"])
    left = [k for k in minio.keys(s3_bucket, f"pitr/{PREFIX}/oplog/") if k.endswith(".slice.json")]
    assert left and all(h.slice_end(k.rsplit("/", 1)[1]) > b_start for k in left), left
    archives = [k for k in minio.keys(s3_bucket, f"pitr/{PREFIX}/oplog/") if ".oplog" in k]
    assert len(archives) == len(left), (archives, left)


CAMPAIGN_KILLS = int(os.environ.get("MONGOSNAP_FOLLOWER_CAMPAIGN_KILLS", "8"))


def test_follower_crash_campaign(tools, fresh_db, ferretdb_factory, tmp_path):
    """SIGKILL the follower at random moments while a writer writes; sometimes two followers
    run at once (an agent killed outright: its follower commits on SIGTERM while the restarted
    agent's new one starts). Afterwards: no slice is damaged, there is no gap, and restores to
    random instants equal the source. MONGOSNAP_FOLLOWER_CAMPAIGN_KILLS sets the number of
    kills (8 in CI; docs/reliability.md has a long run)."""
    source = make_source(fresh_db)
    client = source.client
    store = tmp_path / "store"
    store.mkdir()
    uri = h.write_uri_file(tmp_path, source.uri)
    rnd = random.Random(int(os.environ.get("MONGOSNAP_FOLLOWER_CAMPAIGN_SEED", "5")))
    h.snapshot(tools, uri, store, "a", "--prefix", PREFIX)
    writer = TimedWriter(source.new_client(), first_id=100, seed=9, max_ops=10**9)
    writer.start()
    followers = [start_follower(tools, uri, store)]
    overlaps = 0
    try:
        for k in range(CAMPAIGN_KILLS):
            time.sleep(rnd.uniform(0.2, 2.5))
            victim = followers.pop(0)
            if rnd.random() < 0.3:
                # The agent's death: SIGTERM to the follower, a new one started at once.
                victim.proc.send_signal(signal.SIGTERM)
                followers.append(start_follower(tools, uri, store))
                done = victim.finish()
                # It may lose the race for its temporary file to the new follower's clean-up:
                # then it fails, and the new one reads what it had read again.
                assert done.returncode in (h.EXIT_OK, h.EXIT_FAILURE), done.describe()
                overlaps += 1
            else:
                victim.proc.send_signal(signal.SIGKILL)
                victim.finish()
                followers.append(start_follower(tools, uri, store))
        time.sleep(2)
    finally:
        writer.stop()
    last = all_ts(client)[-1]
    time.sleep(2.5)
    for f in followers:
        f.proc.send_signal(signal.SIGTERM)
        h.expect_ok(f.finish())
    chain = h.expect_ok(h.run_worker(tools, "verify-chain", "--store", store, "--prefix", PREFIX,
                                     "--json")).json()
    assert chain["damaged"] == 0 and chain["gaps"] == 0, chain
    a_end = pos(h.read_manifest(store, "a", prefix=PREFIX)["consistency"]["oplog_end"])
    entries = live_entries(client)
    after = [ts_tuple(e["ts"]) for e in entries if a_end < ts_tuple(e["ts"]) <= last]
    target = ferretdb_factory(name="campaign-target")
    target_uri = h.write_uri_file(tmp_path, target.uri, "target-uri")
    for k, t in enumerate(sorted(rnd.sample(after, 2)) + [last]):
        run = restore_to(tools, target_uri, store, f"{t[0]}:{t[1]}", k)
        assert run.returncode == h.EXIT_OK, run.describe()
        assert h.raw_docs(target.client[f"r{k}"][LIVE_COLL]) == state_at(entries, t), \
            f"restore to {t} after {CAMPAIGN_KILLS} kills ({overlaps} overlapping followers)"


def test_replayed_inserts_replace_what_the_target_holds(tools, fresh_db, ferretdb_factory, tmp_path):
    """Slice inserts are sent as inserts first (fast on servers that scan for an _id); one whose
    _id the target holds already is replaced, as the upsert it stands for: the target ends as
    the source is."""
    source = make_source(fresh_db)
    client = source.client
    store = tmp_path / "store"
    store.mkdir()
    uri = h.write_uri_file(tmp_path, source.uri)
    h.snapshot(tools, uri, store, "a", "--prefix", PREFIX)
    follower = start_follower(tools, uri, store)
    time.sleep(1.5)
    for i in range(500, 510):
        client[LIVE_DB][LIVE_COLL].insert_one({"_id": i, "from": "source"})
    last = all_ts(client)[-1]
    time.sleep(1.5)
    follower.proc.send_signal(signal.SIGTERM)
    h.expect_ok(follower.finish())
    target = ferretdb_factory(name="replay-dup-target")
    target.client[LIVE_DB][LIVE_COLL].insert_many([{"_id": i, "junk": True} for i in range(500, 505)])
    target_uri = h.write_uri_file(tmp_path, target.uri, "target-uri")
    run = h.run_worker(tools, "restore", "--uri-file", target_uri, "--store", store, "--prefix",
                       PREFIX, "--time", f"{last[0]}:{last[1]}", "--ns-include", f"{LIVE_DB}.*",
                       "--json")
    assert run.returncode == h.EXIT_OK, run.describe()
    got = {d["_id"]: d for d in target.client[LIVE_DB][LIVE_COLL].find({"_id": {"$gte": 500}})}
    assert got == {i: {"_id": i, "from": "source"} for i in range(500, 510)}, got


def test_s3_cut_off_for_a_while_the_chain_continues(tools, fresh_db, ferretdb_factory, minio,
                                                   minio_proxy, s3_bucket, tmp_path):
    """The store unreachable for a while (every connection to MinIO reset): a slice commit
    that cannot finish fails the follower, having stored nothing half; started again (as the
    agent does, with its backoff) once the store is back, it continues from the last committed
    slice: no gap, and the restore to the last write matches."""
    env = s3_env(minio, tmp_path)
    source = make_source(fresh_db)
    client = source.client
    store = minio_proxy.location(s3_bucket, "cut", max_attempts="2", connect_timeout="1s",
                                 stall_timeout="2s")
    uri = h.write_uri_file(tmp_path, source.uri)
    h.expect_ok(h.run_worker(tools, "snapshot", "--uri-file", uri, "--store", store, "--prefix",
                             PREFIX, "--name", "a", env=env))
    writer = TimedWriter(source.new_client(), first_id=2000, seed=6)
    writer.start()
    runs = []
    try:
        follower = h.start_worker(tools, "follow", "--uri-file", uri, "--store", store, "--prefix",
                                  PREFIX, "--slice-sec", "1", "--json", env=env)
        time.sleep(2.5)
        toxic = minio_proxy.reset_peer(stream="upstream")
        runs.append(follower.finish(timeout=120))  # fails: its slice cannot be stored
        time.sleep(1)
        minio_proxy.remove(toxic)
        follower = h.start_worker(tools, "follow", "--uri-file", uri, "--store", store, "--prefix",
                                  PREFIX, "--slice-sec", "1", "--json", env=env)
        time.sleep(2.5)
    finally:
        writer.stop()
    last = all_ts(client)[-1]
    time.sleep(2)
    follower.proc.send_signal(signal.SIGTERM)
    h.expect_ok(follower.finish())
    assert runs[0].returncode != h.EXIT_OK, runs[0].describe()
    assert "oplog slice" in runs[0].output, runs[0].output[-2000:]
    chain = h.expect_ok(h.run_worker(tools, "verify-chain", "--store", store, "--prefix", PREFIX,
                                     "--json", env=env)).json()
    assert chain["damaged"] == 0 and chain["gaps"] == 0 and len(chain["chains"]) == 1, chain
    target = ferretdb_factory(name="s3-cut-target")
    target_uri = h.write_uri_file(tmp_path, target.uri, "target-uri")
    h.expect_ok(h.run_worker(tools, "restore", "--uri-file", target_uri, "--store", store,
                             "--prefix", PREFIX, "--time", f"{last[0]}:{last[1]}", "--ns-include",
                             f"{LIVE_DB}.*", env=env))
    assert h.raw_docs(target.client[LIVE_DB][LIVE_COLL]) == h.raw_docs(client[LIVE_DB][LIVE_COLL])
