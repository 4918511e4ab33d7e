"""Cluster snapshots of a sharded cluster (engine/cluster.h) through mongosnap-worker.

No mongos or sharded mongod can be had here, so the cluster is the closest honest thing: three
FerretDB instances, each with its own oplog, one as the config server holding config.shards,
config.databases, config.collections, config.chunks and config.version documents shaped as a
real config server writes them (MongoDB 6.0/7.0 documentation; FerretDB 1.x cannot store MinKey
and MaxKey, so the outer chunk bounds are large numbers instead), and two as shards. The backup
reads the shards directly, as Percona Backup for MongoDB's agents do.

What is shown: with a writer changing documents on both shards all along, a cluster snapshot
restored into a second such cluster equals, shard by shard, each source shard's state at the
snapshot's consistency point rebuilt from that shard's own oplog; the config data arrives with
shard names mapped (--shard-map) and the target keeps its own config.shards; a map that leaves a
shard without a counterpart, or sends two into one, is refused before anything is restored; a
shard that cannot be reached fails the cluster snapshot naming it, and no part of it stays.
What only a mongos shows (balancerStop/Start, getShardMap) is not shown here.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import random
import signal
import threading
import time
import uuid

import bson
import pytest
from bson import Binary, Int64, ObjectId, Timestamp
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument

import helpers as h

DB = "shop"
RAW = CodecOptions(document_class=RawBSONDocument)
SPLIT = 500  # customer < SPLIT on the first shard


def make_cluster(ferretdb_factory, tag, shard_names):
    cfg = ferretdb_factory(name=f"{tag}-cfg")
    shards = {n: ferretdb_factory(name=f"{tag}-{n}") for n in shard_names}
    for server in [cfg, *shards.values()]:
        server.client.local.create_collection("oplog.rs", capped=True, size=64 * 1024 * 1024)
    now = Timestamp(int(time.time()), 1)
    cfg.client.config.shards.insert_many([
        {"_id": n, "host": f"rs0/{s.address}", "state": 1, "topologyTime": now}
        for n, s in shards.items()])
    cfg.client.config.version.insert_one({"_id": 1, "clusterId": ObjectId()})
    return cfg, shards


def shard_config(cfg, first, second):
    """config.databases, config.collections and config.chunks for shop.orders sharded on
    {customer: 1} in two chunks, one on each shard (the shapes of MongoDB 6.0/7.0)."""
    coll_uuid = Binary(uuid.uuid4().bytes, 4)
    ts = Timestamp(int(time.time()), 2)
    cfg.client.config.databases.insert_one({
        "_id": DB, "primary": first,
        "version": {"uuid": Binary(uuid.uuid4().bytes, 4), "timestamp": ts, "lastMod": 1}})
    cfg.client.config.collections.insert_one({
        "_id": f"{DB}.orders", "lastmodEpoch": ObjectId(), "lastmod": datetime.datetime(2026, 12, 7),
        "timestamp": ts, "uuid": coll_uuid, "key": {"customer": 1}, "unique": False,
        "noBalance": False})
    lo, hi = Int64(-(2**53)), Int64(2**53)  # MinKey/MaxKey in a real config server
    cfg.client.config.chunks.insert_many([
        {"_id": ObjectId(), "uuid": coll_uuid, "min": {"customer": lo}, "max": {"customer": SPLIT},
         "shard": first, "lastmod": Timestamp(1, 0), "onCurrentShardSince": ts,
         "history": [{"validAfter": ts, "shard": first}]},
        {"_id": ObjectId(), "uuid": coll_uuid, "min": {"customer": SPLIT}, "max": {"customer": hi},
         "shard": second, "lastmod": Timestamp(1, 1), "onCurrentShardSince": ts,
         "history": [{"validAfter": ts, "shard": second}]},
    ])


def load(shards):
    (first, s1), (second, s2) = shards.items()
    s1.client[DB].orders.insert_many([{"_id": i, "customer": i % SPLIT, "pad": "a" * 200}
                                      for i in range(3000)])
    s2.client[DB].orders.insert_many([{"_id": 10_000 + i, "customer": SPLIT + i % SPLIT, "pad": "b" * 200}
                                      for i in range(3000)])
    s1.client[DB].users.insert_many([{"_id": i, "name": f"u{i}"} for i in range(200)])  # unsharded


class Loop(threading.Thread):
    """A writer: step(n) again and again until stopped; ops counts the steps' writes, and an
    error ends it and fails stop()."""

    pause = 0.005

    def __init__(self):
        super().__init__(daemon=True)
        self.stop_event = threading.Event()
        self.error = None
        self.ops = 0

    def run(self):
        n = 0
        try:
            while not self.stop_event.is_set():
                self.step(n)
                n += 1
                time.sleep(self.pause)
        except Exception as e:  # noqa: BLE001
            self.error = e

    def stop(self):
        self.stop_event.set()
        self.join(timeout=30)
        assert self.error is None, self.error


class Writer(Loop):
    """Inserts, updates and deletes on both shards until stopped."""

    def __init__(self, shards):
        super().__init__()
        self.colls = [(s.new_client()[DB].orders, base) for s, base in zip(shards.values(), (0, 10_000))]
        self.random = random.Random(5)

    def step(self, n):
        r = self.random
        for coll, base in self.colls:
            k = r.random()
            if k < 0.5:
                coll.insert_one({"_id": base + 5000 + n, "customer": r.randrange(SPLIT) + (SPLIT if base else 0), "w": n})
            elif k < 0.8:
                coll.update_one({"_id": base + r.randrange(3000)}, {"$set": {"w": n}})
            else:
                coll.delete_one({"_id": base + r.randrange(3000)})
            self.ops += 1


class ConfigWriter(Loop):
    """Routing changes on the config server while the snapshot runs, as its own writes would be
    with the balancer stopped: databases created and dropped, a chunk's and a collection's
    fields set."""

    pause = 0.01

    def __init__(self, cfg):
        super().__init__()
        self.config = cfg.new_client().config

    def step(self, n):
        self.config.databases.insert_one({"_id": f"extra{n}", "primary": ("shard01", "shard02")[n % 2],
                                          "version": {"uuid": Binary(uuid.uuid4().bytes, 4), "lastMod": 1}})
        if n % 3 == 2:
            self.config.databases.delete_one({"_id": f"extra{n - 1}"})
        self.config.chunks.update_one({"shard": "shard02"}, {"$set": {"n": n, "jumbo": n % 2 == 0}})
        self.config.collections.update_one({"_id": f"{DB}.orders"}, {"$set": {"noBalance": n % 2 == 0}})
        self.ops += 1


def mapped_config(raws, names):
    """Config documents with their shard names mapped as a restore maps them."""
    out = []
    for raw in raws:
        d = bson.decode(raw)
        for f in ("primary", "shard"):
            if f in d:
                d[f] = names.get(d[f], d[f])
        for entry in d.get("history", []):
            entry["shard"] = names.get(entry["shard"], entry["shard"])
        out.append(d)
    return out


def ts_tuple(ts):
    return (ts.time, ts.inc)


def state_at(server, ns, until):
    """ns on this server as of oplog time `until`, rebuilt from the oplog from empty (every
    document of these tests was written after the oplog was created). Raw, in _id order."""
    oplog = server.client.local["oplog.rs"].with_options(codec_options=RAW)
    docs = {}
    for e in sorted(oplog.find({"ns": ns}), key=lambda e: ts_tuple(e["ts"])):
        if ts_tuple(e["ts"]) > until:
            break
        op, o = e["op"], e["o"]
        if op == "i":
            docs[o["_id"]] = o.raw
        elif op == "u":
            _id = e["o2"]["_id"]
            if _id in docs:
                cur = bson.decode(docs[_id])
                upd = bson.decode(o.raw)
                if any(k.startswith("$") for k in upd):
                    for k, v in upd.get("$set", {}).items():
                        cur[k] = v
                    for k in upd.get("$unset", {}):
                        cur.pop(k, None)
                    docs[_id] = bson.encode(cur)
                else:
                    docs[_id] = o.raw
        elif op == "d":
            docs.pop(o["_id"], None)
    return [docs[k] for k in sorted(docs)]


def raw_docs(server, ns):
    db, coll = ns.split(".", 1)
    c = server.client[db].get_collection(coll, codec_options=RAW)
    return [d.raw for d in c.find().sort("_id", 1)]


def reseal(text: str) -> str:
    """A cluster manifest's text with its self-checksum made right again: what someone who
    edits it on purpose does (a checksum finds damage, not a hostile writer)."""
    marker = '"manifest_sha256" : "'
    at = text.rindex(marker) + len(marker)
    body = (text[:at] + "0" * 64 + text[at + 64:]).rstrip("\n")
    digest = hashlib.sha256(body.encode()).hexdigest()
    return text[:at] + digest + text[at + 64:]


def dumps(doc) -> str:
    return reseal(json.dumps(doc, separators=(", ", " : ")) + "\n")


def worker_json(run):
    h.expect_ok(run)
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.fixture
def source(ferretdb_factory, tmp_path):
    cfg, shards = make_cluster(ferretdb_factory, "src", ["shard01", "shard02"])
    shard_config(cfg, "shard01", "shard02")
    load(shards)
    cfg.uri_file = h.write_uri_file(tmp_path, cfg.uri, "src-uri")
    return cfg, shards


def test_cluster_snapshot_and_restore_to_the_common_point(tools, source, ferretdb_factory, tmp_path):
    cfg, shards = source
    store = tmp_path / "store"
    store.mkdir()
    writer, config_writer = Writer(shards), ConfigWriter(cfg)
    writer.start()
    config_writer.start()
    time.sleep(0.3)
    res = worker_json(h.run_worker(tools, "cluster-snapshot", "--uri-file", cfg.uri_file, "--store", store,
                                   "--prefix", "cl", "--name", "s1", "--json"))
    after, config_after = writer.ops, config_writer.ops
    deadline = time.monotonic() + 30  # writes after the snapshot too, however busy the machine
    while (writer.ops < after + 20 or config_writer.ops < config_after + 5) and time.monotonic() < deadline:
        time.sleep(0.05)
    writer.stop()
    config_writer.stop()
    assert writer.ops > 20
    point = (res["consistency_point"]["t"], res["consistency_point"]["i"])
    parts = {p["shard"]: p for p in res["parts"]}
    assert set(parts) == {"shard01", "shard02", "config"}
    for p in parts.values():  # every part's oplog reaches the point, or its shard went quiet
        assert (p["dump_end"]["t"], p["dump_end"]["i"]) <= point
    manifest = json.loads((store / "cl" / "s1.cluster.json").read_text())
    assert manifest["format"] == "mongosnap-cluster"
    assert (store / "cl" / "s1.parts" / "shard01.manifest.json").exists()
    # the store's scan (what the agent's resync takes into its records, and retention then
    # expires) lists no part as a snapshot of its own, and an unfinished part is no orphan
    (store / "cl" / "s1.parts" / "shard09.archive.zst").write_bytes(b"torn")
    scan = h.run_worker(tools, "scan", "--store", store)
    assert scan.returncode == 0, scan.describe()
    assert "1 snapshot(s) found, 0 manifest(s) unreadable, 0 archive(s) without a manifest; " \
        "1 of them cluster snapshot(s)" in scan.output, scan.describe()
    (store / "cl" / "s1.parts" / "shard09.archive.zst").unlink()
    # a policy may be named "x.parts": its snapshots are its own, listed, never a cluster's
    # orphaned parts (which the agent would remove)
    lone_uri = h.write_uri_file(tmp_path, shards["shard01"].uri, "shard01-uri")
    h.expect_ok(h.run_worker(tools, "snapshot", "--uri-file", lone_uri, "--store", store,
                             "--prefix", "shop.parts", "--name", "shop.parts-1"))
    scan = h.run_worker(tools, "scan", "--store", store)
    assert "2 snapshot(s) found, 0 manifest(s) unreadable, 0 archive(s) without a manifest; " \
        "1 of them cluster snapshot(s)" in scan.output, scan.describe()
    run = h.run_worker(tools, "remove", "--store", store, "--key", "shop.cluster.json")
    assert run.returncode == 2 and "has a prefix" in run.output, run.describe()
    assert (store / "shop.parts" / "shop.parts-1.manifest.json").exists()
    h.expect_ok(h.run_worker(tools, "remove", "--store", store, "--key",
                             "shop.parts/shop.parts-1.manifest.json", "--key",
                             "shop.parts/shop.parts-1.archive.zst"))
    run = h.run_worker(tools, "cluster-snapshot", "--uri-file", cfg.uri_file, "--store", store,
                       "--name", "top")
    assert run.returncode == 2 and "needs a prefix" in run.output, run.describe()
    run = h.run_worker(tools, "cluster-snapshot", "--uri-file", cfg.uri_file, "--store", store,
                       "--prefix", "cl", "--name", "s2", "--format", "chunked")
    assert run.returncode == 2 and "does not take chunked snapshots" in run.output, run.describe()
    assert not (store / "cl" / "s2.parts").exists()

    # a second cluster, its shards named otherwise
    tcfg, tshards = make_cluster(ferretdb_factory, "dst", ["alpha", "beta"])
    tcfg.uri_file = h.write_uri_file(tmp_path, tcfg.uri, "dst-uri")
    # a map that leaves a shard without a counterpart, or merges two, changes nothing
    for bad in (None, "shard01=alpha", "shard01=alpha,shard02=alpha"):
        extra = ["--shard-map", bad] if bad else []
        run = h.run_worker(tools, "cluster-restore", "--uri-file", tcfg.uri_file, "--store", store,
                           "--snapshot", "cl/s1", *extra)
        assert run.returncode == 2 and "Nothing was restored" in run.output or \
            (bad and "twice" in run.output and run.returncode == 2), run.describe()
        assert DB not in tshards["alpha"].client.list_database_names()
    out = worker_json(h.run_worker(tools, "cluster-restore", "--uri-file", tcfg.uri_file, "--store", store,
                                   "--snapshot", "cl/s1", "--shard-map", "shard01=alpha,shard02=beta",
                                   "--json"))
    assert out["shards"] == 2
    # each shard equals its source shard's state at the point, rebuilt from its own oplog
    for src_name, dst_name in (("shard01", "alpha"), ("shard02", "beta")):
        want = state_at(shards[src_name], f"{DB}.orders", point)
        got = raw_docs(tshards[dst_name], f"{DB}.orders")
        assert got == want, f"{src_name}: {len(got)} documents restored, {len(want)} at the point"
        # the point is not the end: the writer went on after it on every shard
        assert want != raw_docs(shards[src_name], f"{DB}.orders"), src_name
    assert raw_docs(tshards["alpha"], f"{DB}.users") == raw_docs(shards["shard01"], f"{DB}.users")
    # the config data, with the target's names, at the point too: rebuilt from the config
    # server's oplog, it differs from what the config part dumped (the config server went on
    # changing while the shards were read) and from the end
    names = {"shard01": "alpha", "shard02": "beta"}
    tc = tcfg.client.config
    config_dump_end = (parts["config"]["dump_end"]["t"], parts["config"]["dump_end"]["i"])
    assert out["config_oplog_applied"] > 0, out
    for coll in ("databases", "chunks", "collections"):
        want = mapped_config(state_at(cfg, f"config.{coll}", point), names)
        got = [bson.decode(d) for d in raw_docs(tcfg, f"config.{coll}")]
        assert got == want, (coll, got, want)
        if coll != "collections":
            assert want != mapped_config(state_at(cfg, f"config.{coll}", config_dump_end), names), coll
            assert want != mapped_config(raw_docs(cfg, f"config.{coll}"), names), coll
    assert tc.databases.find_one({"_id": DB})["primary"] == "alpha"
    assert sorted(c["shard"] for c in tc.chunks.find()) == ["alpha", "beta"]
    assert sorted(s["_id"] for s in tc.shards.find()) == ["alpha", "beta"]
    # a cluster manifest naming objects outside its own parts is damage: refused, nothing done
    cm = store / "cl" / "s1.cluster.json"
    good = cm.read_text()
    # damage (the point changed, the checksum not): refused as corrupted
    t = manifest["consistency_point"]["t"]
    cm.write_text(good.replace(f'"t" : {t}', f'"t" : {t + 1}', 1))
    run = h.run_worker(tools, "cluster-restore", "--uri-file", tcfg.uri_file, "--store", store,
                       "--snapshot", "cl/s1", "--shard-map", "shard01=alpha,shard02=beta", "--drop")
    assert run.returncode == 3 and "corrupted" in run.output, run.describe()
    cm.write_text(reseal(good.replace("cl/s1.parts/shard02", "other/x")))
    run = h.run_worker(tools, "cluster-restore", "--uri-file", tcfg.uri_file, "--store", store,
                       "--snapshot", "cl/s1", "--shard-map", "shard01=alpha,shard02=beta", "--drop")
    assert run.returncode == 3 and "outside" in run.output and \
        "nothing was restored" in run.output, run.describe()
    doc = json.loads(good)
    swapped = json.loads(good)
    for part in swapped["parts"]:
        part["manifest"] = {"shard01": "cl/s1.parts/shard02.manifest.json",
                            "shard02": "cl/s1.parts/shard01.manifest.json"}.get(part["shard"], part["manifest"])
    twice = dict(doc, parts=doc["parts"] + doc["parts"][:1])
    no_config = dict(doc, parts=[p for p in doc["parts"] if p["shard"] != "config"])
    for bad, why in ((swapped, "not cl/s1.parts/"), (twice, "twice"), (no_config, "the config data")):
        cm.write_text(dumps(bad))
        run = h.run_worker(tools, "cluster-restore", "--uri-file", tcfg.uri_file, "--store", store,
                           "--snapshot", "cl/s1", "--shard-map", "shard01=alpha,shard02=beta", "--drop")
        assert run.returncode == 3 and why in run.output and "nothing was restored" in run.output, \
            run.describe()
    cm.write_text(good)
    # --drop with one part damaged: every part is checked before the first shard is touched
    tshards["alpha"].client[DB].orders.insert_one({"_id": "marker", "customer": 1})
    restored_alpha = raw_docs(tshards["alpha"], f"{DB}.orders")
    config_before = sorted(str(c) for c in tc.chunks.find())
    archive = next((store / "cl" / "s1.parts").glob("shard02.archive*"))
    whole = archive.read_bytes()
    damaged = bytearray(whole)
    damaged[len(damaged) // 2] ^= 0x40
    archive.write_bytes(bytes(damaged))
    run = h.run_worker(tools, "cluster-restore", "--uri-file", tcfg.uri_file, "--store", store,
                       "--snapshot", "cl/s1", "--shard-map", "shard01=alpha,shard02=beta", "--drop")
    assert run.returncode != 0 and "part shard02" in run.output and \
        "nothing was dropped or changed" in run.output, run.describe()
    assert raw_docs(tshards["alpha"], f"{DB}.orders") == restored_alpha  # the marker too: no drop
    assert sorted(str(c) for c in tc.chunks.find()) == config_before
    # verify reads every part and names the damaged one
    run = h.run_worker(tools, "verify", "--store", store, "--snapshot", "cl/s1")
    assert run.returncode == 3 and "part shard02 of cluster snapshot cl/s1" in run.output, run.describe()
    archive.write_bytes(whole)
    out = worker_json(h.run_worker(tools, "verify", "--store", store, "--snapshot", "cl/s1", "--json"))
    assert out["parts"] == 3 and out["documents"] >= 6000, out
    # the target's routing of a database the snapshot does not hold is not the restore's
    tc.databases.insert_one({"_id": "other", "primary": "beta"})
    tc.chunks.insert_one({"_id": "other-chunk", "ns": "other.c", "shard": "beta"})
    # swapped names: each from the snapshot's own value, in one step (not beta->alpha, then
    # every alpha, the first included, ->beta)
    worker_json(h.run_worker(tools, "cluster-restore", "--uri-file", tcfg.uri_file, "--store", store,
                             "--snapshot", "cl/s1", "--shard-map", "shard01=beta,shard02=alpha",
                             "--drop", "--json"))
    assert tc.databases.find_one({"_id": DB})["primary"] == "beta"
    by_min = {c["min"]["customer"]: c for c in tc.chunks.find({"uuid": {"$exists": True}})}
    assert [by_min[k]["shard"] for k in sorted(by_min)] == ["beta", "alpha"]
    assert [by_min[k]["history"][0]["shard"] for k in sorted(by_min)] == ["beta", "alpha"]
    assert raw_docs(tshards["beta"], f"{DB}.orders") == state_at(shards["shard01"], f"{DB}.orders", point)
    assert tc.databases.find_one({"_id": "other"})["primary"] == "beta"
    assert tc.chunks.find_one({"_id": "other-chunk"})["shard"] == "beta"

    # one shard's part alone, into a replica set, for inspection
    lone = ferretdb_factory(name="lone")
    lone.uri_file = h.write_uri_file(tmp_path, lone.uri, "lone-uri")
    h.restore(tools, lone.uri_file, "--store", store, "--snapshot", "cl/s1.parts/shard02",
              "--until", f"{point[0]}:{point[1]}")
    assert raw_docs(lone, f"{DB}.orders") == state_at(shards["shard02"], f"{DB}.orders", point)
    # the same by the part's shard name: the point comes from the cluster manifest
    h.restore(tools, lone.uri_file, "--store", store, "--snapshot", "cl/s1", "--part", "shard01",
              "--drop")
    assert raw_docs(lone, f"{DB}.orders") == state_at(shards["shard01"], f"{DB}.orders", point)

    # removal: the cluster manifest first, then every part; a second removal finds nothing left
    # and a removal cut short after the manifest is finished by the next from the parts listed
    out = worker_json(h.run_worker(tools, "remove", "--store", store, "--key", "cl/s1.cluster.json",
                                   "--json"))
    assert out["removed"] >= 7, out  # the manifest, and three parts' archives and manifests
    assert not (store / "cl" / "s1.cluster.json").exists()
    assert not [p for p in (store / "cl").rglob("*") if p.is_file()]
    # the worker's snapshot of a config server is the cluster's; a "part" event per part (the
    # agent writes a part-stored Event Log entry for each)
    run = h.run_worker(tools, "snapshot", "--uri-file", cfg.uri_file, "--store", store,
                       "--prefix", "cl", "--name", "s3", progress=True)
    h.expect_ok(run)
    parts_seen = {e["shard"]: e for e in run.events if e.get("event") == "part"}
    assert set(parts_seen) == {"shard01", "shard02", "config"}, run.events
    assert parts_seen["shard01"]["manifest"] == "cl/s3.parts/shard01.manifest.json"
    assert parts_seen["shard02"]["documents"] >= 3000
    result = [e for e in run.events if e.get("event") == "result"][-1]
    assert result["archive"] == result["manifest"] == "cl/s3.cluster.json", result
    for extra in (["--ns-include", "shop.*"], ["--no-oplog"]):
        bad = h.run_worker(tools, "snapshot", "--uri-file", cfg.uri_file, "--store", store,
                           "--prefix", "cl", "--name", "s4", *extra)
        assert bad.returncode == 2 and "cluster snapshot takes every namespace" in bad.output, \
            bad.describe()
    assert not list((store / "cl").glob("s4*"))
    (store / "cl" / "s3.cluster.json").unlink()  # the first removal's first step, then killed
    out = worker_json(h.run_worker(tools, "remove", "--store", store, "--key", "cl/s3.cluster.json",
                                   "--json"))
    assert out["not_found"] == 1 and out["removed"] >= 6, out
    assert not [p for p in (store / "cl").rglob("*") if p.is_file()]


def ts_of(v):
    """A position of a progress event ({"$timestamp": {"t", "i"}}) as (t, i)."""
    return (v["$timestamp"]["t"], v["$timestamp"]["i"])


def test_cluster_point_in_time(tools, source, ferretdb_factory, tmp_path):
    """One oplog follower per part (every shard's replica set and the config server), each its
    own chain under cl/oplog/parts/<part>/; the cluster's restorable range runs from the cluster
    snapshot's consistency point to where every part's chain reaches; a restore to a time in it
    puts every shard, and the config data, at that time, each rebuilt from its own oplog; a time
    outside it is refused with nothing changed."""
    cfg, shards = source
    store = tmp_path / "store"
    store.mkdir()
    follower = h.start_worker(tools, "follow", "--uri-file", cfg.uri_file, "--store", store,
                              "--prefix", "cl", "--slice-sec", "1")
    writer, config_writer = Writer(shards), ConfigWriter(cfg)
    writer.start()
    config_writer.start()
    try:
        time.sleep(1)
        res = worker_json(h.run_worker(tools, "cluster-snapshot", "--uri-file", cfg.uri_file,
                                       "--store", store, "--prefix", "cl", "--name", "s1", "--json"))
        time.sleep(3)  # writes after the snapshot: only the slices hold them
    finally:
        writer.stop()
        config_writer.stop()
    # a shard added afterwards: a database whose primary it is (a second later, so that its
    # position is after every time restored to below, whatever the servers' counters)
    time.sleep(1.1)
    cfg.client.config.databases.insert_one({"_id": "newdb", "primary": "shard03"})
    added = max(ts_tuple(e["ts"]) for e in cfg.client.local["oplog.rs"].find({"ns": "config.databases"}))
    # the followers read the last writes and claim the quiet with idle slices: waited for (not a
    # fixed sleep: on a loaded machine a shard's idle claim lags the config server's insert)
    def reaches_added(e):
        return e.get("event") == "ranges" and len(e["restorable"]) == 1 and \
            ts_of(e["restorable"][0]["to"]) >= added
    assert follower.wait_for_event(reaches_added, timeout=60), "the range never reached the addition"
    follower.proc.send_signal(signal.SIGTERM)
    run = h.expect_ok(follower.finish())
    for part in ("shard01", "shard02", "config"):
        chain = list((store / "cl" / "oplog" / "parts" / part / "oplog").glob("*.slice.json"))
        assert chain, (part, run.describe())
    assert not list((store / "cl" / "oplog").glob("*.slice.json"))  # no chain of the policy's own
    ranges = [e["restorable"] for e in run.events if e.get("event") == "ranges"]
    assert ranges and len(ranges[-1]) == 1, ranges[-1:]
    point = (res["consistency_point"]["t"], res["consistency_point"]["i"])
    lo, hi = ts_of(ranges[-1][0]["from"]), ts_of(ranges[-1][0]["to"])
    assert lo == point and hi > point, (lo, hi, point)
    # a time between the point and the end: shard01's oplog entry half-way there
    later = sorted(ts_tuple(e["ts"]) for e in shards["shard01"].client.local["oplog.rs"].find(
        {"ns": f"{DB}.orders"}) if point < ts_tuple(e["ts"]) <= hi)
    assert len(later) > 10, later
    when = later[len(later) // 2]

    tcfg, tshards = make_cluster(ferretdb_factory, "pdst", ["alpha", "beta"])
    tcfg.uri_file = h.write_uri_file(tmp_path, tcfg.uri, "pdst-uri")
    for bad in ((hi[0] + 100, 0), (point[0] - 100, 0)):
        run = h.run_worker(tools, "restore", "--uri-file", tcfg.uri_file, "--store", store,
                           "--prefix", "cl", "--time", f"{bad[0]}:{bad[1]}")
        assert run.returncode != 0 and "restorable" in run.output, run.describe()
        assert DB not in tshards["alpha"].client.list_database_names()
    # after the shard was added: the routing names a shard the snapshot does not hold
    assert added <= hi, (added, hi)
    run = h.run_worker(tools, "restore", "--uri-file", tcfg.uri_file, "--store", store,
                       "--prefix", "cl", "--time", f"{hi[0]}:{hi[1]}",
                       "--shard-map", "shard01=alpha,shard02=beta", "--drop")
    assert run.returncode != 0 and "'shard03'" in run.output and "Nothing was restored" in run.output, \
        run.describe()
    assert DB not in tshards["alpha"].client.list_database_names()
    # what applies to one part is refused for the whole cluster
    for extra in (["--ns-include", f"{DB}.*"], ["--part", "shard01"], ["--no-indexes"]):
        run = h.run_worker(tools, "restore", "--uri-file", tcfg.uri_file, "--store", store,
                           "--prefix", "cl", "--time", f"{when[0]}:{when[1]}", *extra)
        assert run.returncode == h.EXIT_USAGE and "every shard" in run.output, (extra, run.describe())
        assert DB not in tshards["alpha"].client.list_database_names()
    out = worker_json(h.run_worker(tools, "restore", "--uri-file", tcfg.uri_file, "--store", store,
                                   "--prefix", "cl", "--time", f"{when[0]}:{when[1]}",
                                   "--shard-map", "shard01=alpha,shard02=beta", "--json"))
    assert out["shards"] == 2, out
    for src_name, dst_name in (("shard01", "alpha"), ("shard02", "beta")):
        want = state_at(shards[src_name], f"{DB}.orders", when)
        assert raw_docs(tshards[dst_name], f"{DB}.orders") == want, src_name
        # neither the snapshot's point nor the end
        assert want != state_at(shards[src_name], f"{DB}.orders", point), src_name
        assert want != raw_docs(shards[src_name], f"{DB}.orders"), src_name
    names = {"shard01": "alpha", "shard02": "beta"}
    for coll in ("databases", "chunks", "collections"):
        want = mapped_config(state_at(cfg, f"config.{coll}", when), names)
        assert [bson.decode(d) for d in raw_docs(tcfg, f"config.{coll}")] == want, coll
    # --drop with shard02's slices damaged: found before the first shard is dropped
    tshards["alpha"].client[DB].orders.insert_one({"_id": "marker", "customer": 1})
    before = raw_docs(tshards["alpha"], f"{DB}.orders")
    archives = [p for p in (store / "cl" / "oplog" / "parts" / "shard02" / "oplog").iterdir()
                if ".oplog" in p.name and p.stat().st_size > 0]
    whole = {p: p.read_bytes() for p in archives}
    for p, data in whole.items():
        damaged = bytearray(data)
        damaged[len(damaged) // 2] ^= 0x40
        p.write_bytes(bytes(damaged))
    run = h.run_worker(tools, "restore", "--uri-file", tcfg.uri_file, "--store", store, "--prefix", "cl",
                       "--time", f"{when[0]}:{when[1]}", "--shard-map", "shard01=alpha,shard02=beta",
                       "--drop")
    assert run.returncode != 0 and "part shard02" in run.output and \
        "nothing was dropped or changed" in run.output, run.describe()
    assert raw_docs(tshards["alpha"], f"{DB}.orders") == before
    for p, data in whole.items():
        p.write_bytes(data)


def test_cluster_follower_follows_again_when_the_shards_change(tools, source, ferretdb_factory,
                                                              tmp_path):
    """A shard added while the cluster's follower runs: the follower notices at its next refresh,
    every part commits what it read and the worker ends saying why (the agent then starts it
    again at once); started again it follows the new shard too."""
    cfg, shards = source
    store = tmp_path / "store"
    store.mkdir()
    follower = h.start_worker(tools, "follow", "--uri-file", cfg.uri_file, "--store", store,
                              "--prefix", "cl", "--slice-sec", "1")
    writer = Writer(shards)
    writer.start()
    try:
        time.sleep(1)
        res = worker_json(h.run_worker(tools, "cluster-snapshot", "--uri-file", cfg.uri_file,
                                       "--store", store, "--prefix", "cl", "--name", "s1", "--json"))
        time.sleep(2)
        third = ferretdb_factory(name="src-shard03")
        third.client.local.create_collection("oplog.rs", capped=True, size=16 * 1024 * 1024)
        cfg.client.config.shards.insert_one({"_id": "shard03", "host": f"rs0/{third.address}",
                                             "state": 1})
        added = max(ts_tuple(e["ts"]) for e in cfg.client.local["oplog.rs"].find({"ns": "config.shards"}))
        run = follower.finish(timeout=90)
    finally:
        writer.stop()
    assert run.returncode != 0 and "'shard03'" in run.output and "following again" in run.output, \
        run.describe()
    for part in ("shard01", "shard02", "config"):
        assert list((store / "cl" / "oplog" / "parts" / part / "oplog").glob("*.slice.json")), part
    # the shards recorded: as they were when following began, and from the addition on
    parts_dir = store / "cl" / "oplog" / "parts"

    def recorded():
        return sorted((json.loads(p.read_text()) for p in parts_dir.glob("*.shards.json")),
                      key=lambda d: (d["at"]["t"], d["at"]["i"]))
    marks = recorded()
    assert [m["shards"] for m in marks] == [["shard01", "shard02"], ["shard01", "shard02", "shard03"]], marks
    assert (marks[1]["at"]["t"], marks[1]["at"]["i"]) == added, (marks, added)
    run = h.expect_ok(h.run_worker(tools, "follow", "--uri-file", cfg.uri_file, "--store", store,
                                   "--prefix", "cl", "--slice-sec", "1", "--max-sec", "4"))
    assert list((store / "cl" / "oplog" / "parts" / "shard03" / "oplog").glob("*.slice.json")), \
        run.describe()
    assert recorded() == marks  # the same shards: nothing recorded again
    # s1's range ends before the second of the addition, though its parts' chains go on: a time
    # after it is refused (shard03's data is in no part), one before it restores
    listed = worker_json(h.expect_ok(h.run_worker(tools, "list-slices", "--store", store,
                                                  "--prefix", "cl", "--json")))
    ranges = [(ts_of(r["from"]), ts_of(r["to"])) for r in listed["restorable"]]
    point = (res["consistency_point"]["t"], res["consistency_point"]["i"])
    assert ranges == [(point, (added[0] - 1, 4294967295))], (ranges, point, added)
    reach = max(h.slice_end(p.name) for p in (parts_dir / "shard01" / "oplog").glob("*.slice.json"))
    assert reach > added, (reach, added)
    tcfg, tshards = make_cluster(ferretdb_factory, "tdst", ["shard01", "shard02"])
    tcfg.uri_file = h.write_uri_file(tmp_path, tcfg.uri, "tdst-uri")
    run = h.run_worker(tools, "restore", "--uri-file", tcfg.uri_file, "--store", store,
                       "--prefix", "cl", "--time", f"{added[0]}:{added[1]}", "--drop")
    assert run.returncode != 0 and "restorable" in run.output, run.describe()
    assert DB not in tshards["shard01"].client.list_database_names()
    ok = worker_json(h.run_worker(tools, "restore", "--uri-file", tcfg.uri_file, "--store", store,
                                  "--prefix", "cl", "--time", f"{added[0] - 1}:4294967295", "--json"))
    assert ok["shards"] == 2, ok


def test_unreachable_shard_fails_the_cluster_snapshot_naming_it(tools, source, tmp_path):
    cfg, shards = source
    store = tmp_path / "store"
    store.mkdir()
    shards["shard02"].stop()
    run = h.run_worker(tools, "cluster-snapshot", "--uri-file", cfg.uri_file, "--store", store,
                       "--prefix", "cl", "--name", "s1")
    assert run.returncode != 0 and "shard02" in run.output, run.describe()
    assert not (store / "cl" / "s1.cluster.json").exists()
    left = [p.name for p in (store / "cl").rglob("*.manifest.json")] if (store / "cl").exists() else []
    assert left == [], left
