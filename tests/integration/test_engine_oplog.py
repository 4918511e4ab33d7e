"""Point-in-time snapshots: a background writer changes a collection while the snapshot runs;
the snapshot's captured oplog must make the restore land exactly on the manifest's oplog_end,
and --until an earlier oplog time must land on that earlier state.

FerretDB keeps an oplog only when local.oplog.rs is created by hand (capped); it records
inserts, updates (as {$v: 1, $set: <the whole new document>}) and deletes there.  The
expected states are rebuilt from the source's own oplog entries, so the test does not depend
on when the writer stopped.  (Oplog replay of commands, applyOps and $v:2 diffs cannot be produced by FerretDB:
the unit tests of oplog-apply.c cover those.)
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

LIVE_DB, LIVE_COLL = "live", "items"
LIVE_NS = f"{LIVE_DB}.{LIVE_COLL}"
BULK_DB = "bulk"
BULK = {"orders": 6000, "customers": 3000, "events": 2000}
BULK_PAD = 120
LIVE_INITIAL = 200
WRITER_MAX_OPS = 1500
WRITER_PAUSE = 0.008  # FerretDB's SQLite has one writer: leave it room


class Writer(threading.Thread):
    """Inserts, $set updates and deletes on live.items, a bounded number, until stopped."""

    def __init__(self, client, first_id: int):
        super().__init__(daemon=True)
        self.coll = client[LIVE_DB][LIVE_COLL]
        self.next_id = first_id
        self.alive_ids = list(range(first_id))
        self.stop_event = threading.Event()
        self.ops = 0
        self.error = None
        self.rnd = random.Random(1234)

    def run(self) -> None:
        try:
            while self.ops < WRITER_MAX_OPS and not self.stop_event.is_set():
                kind = self.ops % 3
                if kind == 0 or len(self.alive_ids) < 10:
                    self.coll.insert_one({"_id": self.next_id, "n": 0, "payload": "p" * 50})
                    self.alive_ids.append(self.next_id)
                    self.next_id += 1
                elif kind == 1:
                    target = self.rnd.choice(self.alive_ids)
                    self.coll.update_one({"_id": target}, {"$set": {"n": self.ops, "tag": f"t{self.ops}"}})
                else:
                    target = self.alive_ids.pop(self.rnd.randrange(len(self.alive_ids)))
                    self.coll.delete_one({"_id": target})
                self.ops += 1
                time.sleep(WRITER_PAUSE)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=30)
        assert self.error is None, f"the writer failed: {self.error!r}"


def ts_tuple(ts: Timestamp) -> tuple:
    return (ts.time, ts.inc)


def live_entries(client) -> list:
    """The source's oplog entries for live.items, in ts order, as raw documents."""
    oplog = client.local["oplog.rs"].with_options(codec_options=h.RAW)
    entries = list(oplog.find({"ns": LIVE_NS}))
    return sorted(entries, key=lambda e: ts_tuple(e["ts"]))


def state_at(entries, until: tuple) -> list:
    """live.items as of oplog time `until`, rebuilt from its oplog entries (from empty: the
    oplog existed before the collection's first write). Raw documents in _id order."""
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
                docs[_id] = apply_update(docs[_id], o)
        elif op == "d":
            docs.pop(o["_id"], None)
        else:
            pytest.fail(f"unexpected oplog op {op!r}")
    return [docs[k] for k in sorted(docs)]


def apply_update(current: bytes, o) -> bytes:
    """An update entry's effect: a replacement document, or (as FerretDB writes them)
    {$v: 1, $set: {...}, $unset: {...}} on top-level fields."""
    keys = list(o.keys())
    if not any(k.startswith("$") for k in keys):
        return o.raw
    assert set(keys) <= {"$v", "$set", "$unset"}, f"unexpected update form {keys}"
    doc = bson.decode(current)
    for k, v in (bson.decode(o["$set"].raw).items() if "$set" in keys else ()):
        assert "." not in k, f"unexpected dotted $set path {k!r}"
        doc[k] = v
    for k in (o["$unset"].keys() if "$unset" in keys else ()):
        doc.pop(k, None)
    return bson.encode(doc)


def wall_seconds(entry) -> float:
    wall = entry["wall"]
    if wall.tzinfo is None:
        wall = wall.replace(tzinfo=datetime.timezone.utc)
    return wall.timestamp()


def make_source(server, bulk):
    """The oplog first (so every later write is in it), then the data."""
    client = server.client
    client.local.create_collection("oplog.rs", capped=True, size=256 * 1024 * 1024)
    h.load_simple_dataset(client, BULK_DB, bulk, pad=BULK_PAD)
    client[BULK_DB].orders.create_index([("group", 1)], name="group_1")
    client[LIVE_DB][LIVE_COLL].insert_many([{"_id": i, "n": 0, "payload": "p" * 50} for i in range(LIVE_INITIAL)])
    return server


@pytest.fixture
def source_with_oplog(fresh_db):
    """About 3.5 MB in the oplog and the collections: the snapshot takes a few seconds."""
    return make_source(fresh_db, BULK)


@pytest.fixture
def small_source_with_oplog(fresh_db):
    return make_source(fresh_db, {"orders": 100})


def test_snapshot_under_writes_restores_to_oplog_end_and_until(tools, source_with_oplog,
                                                              ferretdb_factory, tmp_path):
    source = source_with_oplog
    client = source.client
    store = tmp_path / "store"
    store.mkdir()
    uri_file = h.write_uri_file(tmp_path, source.uri)

    writer = Writer(source.new_client(), first_id=LIVE_INITIAL)
    writer.start()
    try:
        assert h.wait_until(lambda: writer.ops >= 20 or writer.error, 30), "the writer does not write"
        # --parallel 8: every collection is dumped at once, so the small live.items is copied
        # early and the writer keeps writing while the bulk collections are still read.
        rw = h.start_worker(tools, "snapshot", "--uri-file", uri_file, "--store", store,
                            "--name", "pit", "--parallel", "8", "--json", progress=True)
        run = rw.finish()
        ops_at_end = writer.ops
    finally:
        writer.stop()
    h.expect_ok(run)
    result = run.json()
    assert result["point_in_time"] is True
    assert ops_at_end < WRITER_MAX_OPS, "the writer stopped before the snapshot ended: enlarge WRITER_MAX_OPS"

    manifest = h.read_manifest(store, "pit")
    consistency = manifest["consistency"]
    assert consistency["point_in_time"] is True
    assert consistency["oplog_entries"] > 0
    start = h.oplog_position(consistency["oplog_start"])
    end = h.oplog_position(consistency["oplog_end"])
    assert start < end
    # The captured entries are exactly the source's entries in (start, end].
    all_ts = [ts_tuple(e["ts"]) for e in client.local["oplog.rs"].find({}, {"ts": 1})]
    assert consistency["oplog_entries"] == sum(1 for t in all_ts if start < t <= end)

    entries = live_entries(client)
    during = [e for e in entries if start < ts_tuple(e["ts"]) <= end]
    assert len(during) >= 10, f"only {len(during)} writes overlapped the snapshot: make it slower"

    # Restore into a second server: live.items must be the source's state at oplog_end.
    target = ferretdb_factory(name="oplog-target")
    target_uri = h.write_uri_file(tmp_path, target.uri, "target-uri")
    restored = h.restore(tools, target_uri, "--store", store, "--snapshot", "pit", "--json").json()
    assert restored["oplog_applied"] > 0
    assert h.oplog_position(restored["restored_to"]) == end
    expected_end = state_at(entries, end)
    got = h.raw_docs(target.client[LIVE_DB][LIVE_COLL])
    assert len(got) == len(expected_end)
    assert got == expected_end, "the restored collection is not the source's state at oplog_end"
    bulk_digest = h.digest(client, [BULK_DB])
    assert h.digest(target.client, [BULK_DB]) == bulk_digest

    # --until an earlier point.  A restore can only go back to points after the collection was
    # copied (a copy made later already holds later changes), so pick a write made after
    # live.items was dumped: its namespace event arrived on the progress pipe at that time.
    copied_at = [t for line, t in zip(run.progress_lines, run.progress_times)
                 if f'"namespace" : "{LIVE_NS}"' in line and '"event" : "namespace"' in line]
    assert len(copied_at) == 1, run.progress_lines
    after_copy = [e for e in during if wall_seconds(e) > copied_at[0]]
    assert len(after_copy) >= 6, f"only {len(after_copy)} writes after live.items was copied"
    until = ts_tuple(after_copy[len(after_copy) // 2]["ts"])
    expected_until = state_at(entries, until)
    assert expected_until != expected_end, "the earlier point must differ from the end"
    # Into another database (--ns-from/--ns-to): the replayed writes follow the rename.
    run = h.restore(tools, target_uri, "--store", store, "--snapshot", "pit", "--drop",
                    "--until", f"{until[0]}:{until[1]}", "--ns-from", f"{LIVE_DB}.*",
                    "--ns-to", "live_until.*", "--json")
    restored = run.json()
    assert h.oplog_position(restored["restored_to"]) == until
    assert "before the snapshot's end" in run.stderr
    got = h.raw_docs(target.client["live_until"][LIVE_COLL])
    assert got == expected_until, "--until did not restore the state at that oplog time"
    # The first restore, under the old name, was left alone.
    assert h.raw_docs(target.client[LIVE_DB][LIVE_COLL]) == expected_end

    # --until as a UTC time: everything up to the end of that second.
    seconds = sorted({e["ts"].time for e in after_copy if e["ts"].time < end[0]})
    if seconds:
        second = seconds[len(seconds) // 2]
        utc = datetime.datetime.fromtimestamp(second, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        run = h.restore(tools, target_uri, "--store", store, "--snapshot", "pit", "--until", utc,
                        "--ns-include", f"{LIVE_DB}.*", "--ns-from", f"{LIVE_DB}.*",
                        "--ns-to", "live_utc.*", "--json")
        expected = state_at(entries, (second, 2**32 - 1))
        assert h.raw_docs(target.client["live_utc"][LIVE_COLL]) == expected
        last = max(ts_tuple(e["ts"]) for e in entries if ts_tuple(e["ts"]) <= (second, 2**32 - 1))
        assert h.oplog_position(run.json()["restored_to"]) >= last
    assert h.digest(target.client, [BULK_DB]) == bulk_digest


def test_until_before_snapshot_start_is_refused(tools, small_source_with_oplog, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    uri_file = h.write_uri_file(tmp_path, small_source_with_oplog.uri)
    h.snapshot(tools, uri_file, store, "pit")
    start = h.oplog_position(h.read_manifest(store, "pit")["consistency"]["oplog_start"])
    run = h.run_worker(tools, "restore", "--uri-file", uri_file, "--store", store, "--snapshot", "pit",
                       "--until", f"{start[0] - 10}:1")
    # A point the snapshot cannot reach is a bad argument: usage error, nothing restored.
    assert run.returncode == h.EXIT_USAGE, run.describe()
    assert "cannot be restored to an earlier point" in run.stderr


def test_source_without_oplog_is_not_point_in_time(tools, fresh_db, tmp_path):
    h.load_simple_dataset(fresh_db.client, "nooplog", {"a": 50, "b": 5})
    store = tmp_path / "store"
    store.mkdir()
    uri_file = h.write_uri_file(tmp_path, fresh_db.uri)
    run = h.snapshot(tools, uri_file, store, "plain")
    assert "NOT point-in-time consistent" in run.stdout
    consistency = h.read_manifest(store, "plain")["consistency"]
    assert consistency["point_in_time"] is False
    assert "oplog" in consistency["reason"] and "local.oplog.rs" in consistency["reason"]
    assert "oplog_end" not in consistency
    result = h.snapshot(tools, uri_file, store, "plain-json", "--json").json()
    assert result["point_in_time"] is False
    # --until needs an oplog.
    run = h.run_worker(tools, "restore", "--uri-file", uri_file, "--store", store, "--snapshot", "plain",
                       "--until", "2030-01-01T00:00:00Z")
    assert run.returncode != h.EXIT_OK, run.describe()
    assert "has no oplog" in run.stderr


def test_no_oplog_option_is_not_point_in_time(tools, small_source_with_oplog, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    uri_file = h.write_uri_file(tmp_path, small_source_with_oplog.uri)
    run = h.snapshot(tools, uri_file, store, "off", "--no-oplog")
    assert "NOT point-in-time consistent" in run.stdout
    consistency = h.read_manifest(store, "off")["consistency"]
    assert consistency["point_in_time"] is False
    assert "turned off" in consistency["reason"]
