"""A cluster snapshot whose shards' parts other processes take (`mongosnap-worker cluster-part`,
as the agent beside one of each shard's members will run it), met through the store
(engine/cluster-part.h): the coordinator (`cluster-snapshot --remote-part SHARD`) and each part
run as separate processes, as they would on separate nodes. Shown: the snapshot consistent
across them (each shard restored equals its state at the common point, rebuilt from its own
oplog, with writers on every shard throughout); a part killed, a part never started, a part
whose shard is unreachable or taken without the policy's key, each failing the cluster
snapshot naming the shard, with nothing listed complete and the remote part's objects gone;
the coordinator killed, the part giving up and removing what it stored."""

from __future__ import annotations

import json
import os
import signal
import time

import helpers as h
from agent_fixtures import server_paused
from test_sharded import (DB, ConfigWriter, Writer, make_cluster, raw_docs, source,  # noqa: F401
                          state_at, worker_json)

TIMEOUT = "4"  # --part-timeout: a silent process is given up after 4 s (never seen: 8 s)


def uri_file(tmp_path, server, name):
    return h.write_uri_file(tmp_path, server.uri, name)


def coordinator(tools, cfg, store, name, *remote, extra=()):
    args = ["cluster-snapshot", "--uri-file", cfg.uri_file, "--store", store, "--prefix", "cl",
            "--name", name, "--part-timeout", TIMEOUT, "--json", *extra]
    for shard in remote:
        args += ["--remote-part", shard]
    return h.start_worker(tools, *args)


def part(tools, shard_uri, store, name, shard, *extra):
    return h.start_worker(tools, "cluster-part", "--uri-file", shard_uri, "--store", store,
                          "--prefix", "cl", "--name", name, "--shard", shard,
                          "--part-timeout", TIMEOUT, "--json", *extra)


def wait_object(store, name, leaf, timeout=30.0) -> bool:
    """Whether leaf appeared under name's parts directory within timeout (a meeting object)."""
    deadline = time.monotonic() + timeout
    while leaf not in objects(store, name) and time.monotonic() < deadline:
        time.sleep(0.1)
    return leaf in objects(store, name)


def objects(store, name):
    d = store / "cl" / f"{name}.parts"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_parts_taken_by_other_processes_are_consistent(tools, source, ferretdb_factory, tmp_path):
    cfg, shards = source
    store = tmp_path / "store"
    store.mkdir()
    writer, config_writer = Writer(shards), ConfigWriter(cfg)
    writer.start()
    config_writer.start()
    try:
        time.sleep(0.3)
        coord = coordinator(tools, cfg, store, "s1", "shard02")
        time.sleep(0.5)  # started after the coordinator, as an agent picks its task up later
        remote = part(tools, uri_file(tmp_path, shards["shard02"], "shard02-uri"), store, "s1",
                      "shard02")
        prun = h.expect_ok(remote.finish())
        run = h.expect_ok(coord.finish())
        after = writer.ops
        deadline = time.monotonic() + 30
        while writer.ops < after + 20 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        writer.stop()
        config_writer.stop()
    res = json.loads(run.stdout.strip().splitlines()[-1])
    pres = json.loads(prun.stdout.strip().splitlines()[-1])
    point = (res["consistency_point"]["t"], res["consistency_point"]["i"])
    parts = {p["shard"]: p for p in res["parts"]}
    assert set(parts) == {"shard01", "shard02", "config"}, parts
    assert parts["shard02"]["manifest"] == pres["manifest"] == "cl/s1.parts/shard02.manifest.json"
    assert parts["shard02"]["documents"] == pres["documents"] > 0
    # the meeting objects are gone; the parts and the cluster manifest stay
    assert not [n for n in objects(store, "s1") if n.endswith(".meet.json")], objects(store, "s1")
    assert (store / "cl" / "s1.cluster.json").exists()
    assert "taken by another process" in run.output, run.describe()

    tcfg, tshards = make_cluster(ferretdb_factory, "pdst", ["shard01", "shard02"])
    tcfg.uri_file = h.write_uri_file(tmp_path, tcfg.uri, "pdst-uri")
    out = worker_json(h.run_worker(tools, "cluster-restore", "--uri-file", tcfg.uri_file, "--store",
                                   store, "--snapshot", "cl/s1", "--json"))
    assert out["shards"] == 2
    for name in ("shard01", "shard02"):
        want = state_at(shards[name], f"{DB}.orders", point)
        assert raw_docs(tshards[name], f"{DB}.orders") == want, name
        assert want != raw_docs(shards[name], f"{DB}.orders"), name  # the writer went on
    # every part of the store's copy is verified whole, the remote one too
    h.expect_ok(h.run_worker(tools, "verify", "--store", store, "--snapshot", "cl/s1"))


def assert_failed_whole(run, store, name, *words):
    assert run.returncode != 0, run.describe()
    for w in words:
        assert w in run.output, (w, run.describe())
    assert not (store / "cl" / f"{name}.cluster.json").exists()
    left = [n for n in objects(store, name) if n.endswith((".manifest.json", ".zst"))]
    assert left == [], left


def test_a_part_killed_or_never_started_fails_the_cluster_snapshot_naming_it(tools, source,
                                                                              tmp_path):
    cfg, shards = source
    store = tmp_path / "store"
    store.mkdir()
    shard02 = uri_file(tmp_path, shards["shard02"], "shard02-uri")
    # never started: given up after twice the part time-out, naming the shard
    started = time.monotonic()
    run = coordinator(tools, cfg, store, "never", "shard02").finish(timeout=120)
    assert_failed_whole(run, store, "never", "part shard02", "was not taken within 8 s")
    assert time.monotonic() - started < 60
    # killed while its shard hangs (SIGKILL: it says nothing): silent for the time-out
    with server_paused(shards["shard02"]):
        coord = coordinator(tools, cfg, store, "killed", "shard02")
        remote = part(tools, shard02, store, "killed", "shard02")
        wait_object(store, "killed", "shard02.alive.meet.json")
        remote.proc.send_signal(signal.SIGKILL)
        remote.finish()
        run = coord.finish(timeout=120)
    assert_failed_whole(run, store, "killed", "part shard02", "stopped answering")
    # the part of a shard that does not exist, and the config data, are refused before anything
    for bad in ("shard09", "config"):
        run = h.run_worker(tools, "cluster-snapshot", "--uri-file", cfg.uri_file, "--store", store,
                           "--prefix", "cl", "--name", "bad", "--remote-part", bad)
        assert run.returncode != 0 and f"--remote-part {bad}" in run.output, run.describe()
        assert objects(store, "bad") == [] or not [n for n in objects(store, "bad") if n.endswith(".zst")]


def test_a_failing_part_fails_the_cluster_snapshot_with_its_reason(tools, source, tmp_path):
    cfg, shards = source
    store = tmp_path / "store"
    store.mkdir()
    # its shard unreachable: the part fails, the coordinator says why, naming the shard
    h.write_uri_file(tmp_path, "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500", "dead-uri")
    coord = coordinator(tools, cfg, store, "dead", "shard02")
    remote = part(tools, tmp_path / "dead-uri", store, "dead", "shard02")
    prun = remote.finish()
    run = coord.finish(timeout=120)
    assert prun.returncode != 0, prun.describe()
    assert_failed_whole(run, store, "dead", "part shard02")
    # taken without the policy's key: refused, the part's objects removed
    key = tmp_path / "key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    shard02 = uri_file(tmp_path, shards["shard02"], "shard02-uri")
    coord = coordinator(tools, cfg, store, "nokey", "shard02", extra=("--key-file", key))
    remote = part(tools, shard02, store, "nokey", "shard02")
    remote.finish()
    run = coord.finish(timeout=120)
    assert_failed_whole(run, store, "nokey", "part shard02", "not encrypted")
    # a part arriving with no coordinator: it says so and stores nothing
    run = part(tools, shard02, store, "alone", "shard01").finish(timeout=60)
    assert run.returncode != 0 and "no coordinator" in run.output, run.describe()
    assert objects(store, "alone") == []


def test_the_coordinator_killed_the_part_gives_up(tools, source, tmp_path):
    cfg, shards = source
    store = tmp_path / "store"
    store.mkdir()
    shard02 = uri_file(tmp_path, shards["shard02"], "shard02-uri")
    # shard01 hangs: the coordinator waits at the barrier, the remote part waits for the point
    with server_paused(shards["shard01"]):
        coord = coordinator(tools, cfg, store, "orphan", "shard02")
        remote = part(tools, shard02, store, "orphan", "shard02")
        wait_object(store, "orphan", "shard02.dumped.meet.json", timeout=60)
        assert "shard02.dumped.meet.json" in objects(store, "orphan"), objects(store, "orphan")
        coord.proc.send_signal(signal.SIGKILL)
        coord.finish()
        run = remote.finish(timeout=60)
    assert run.returncode != 0 and "coordinator stopped answering" in run.output, run.describe()
    assert not (store / "cl" / "orphan.cluster.json").exists()
    assert not [n for n in objects(store, "orphan") if n.startswith("shard02.") and
                n.endswith((".manifest.json", ".zst"))], objects(store, "orphan")
    # what is left (meeting objects, the coordinator's temporaries) is a cluster snapshot's
    # orphan for the scan, which the agent removes with the snapshot's key
    scan = h.run_worker(tools, "scan", "--store", store)
    assert "cl/orphan.cluster.json" in scan.output or "orphan.parts" in scan.output, scan.describe()


def test_the_coordinator_giving_up_stops_the_parts(tools, source, tmp_path):
    """A local part fails (shard01 down): the coordinator gives the cluster snapshot up and
    says so in the store; the remote part stops at once with that reason, storing nothing."""
    cfg, shards = source
    store = tmp_path / "store"
    store.mkdir()
    shard02 = uri_file(tmp_path, shards["shard02"], "shard02-uri")
    shards["shard01"].stop()
    coord = coordinator(tools, cfg, store, "down", "shard02")
    remote = part(tools, shard02, store, "down", "shard02")
    run = coord.finish(timeout=120)
    prun = remote.finish(timeout=60)
    assert_failed_whole(run, store, "down", "shard01")
    assert prun.returncode != 0 and "gave the cluster snapshot up" in prun.output, prun.describe()
    assert "shard01" in prun.output, prun.describe()


def test_parts_handed_to_the_agents_beside_the_members(tools, source, tmp_path):
    """--part-agent NODE=MEMBER (what the agent passes: every live agent's Node= and Member=):
    a shard whose best member by NodePriority= has an agent beside it is handed to that node
    (progress event part-assigned), unless it is this node's own; the part there reads its
    shard through the cluster's source (--via-cluster)."""
    cfg, shards = source
    store = tmp_path / "store"
    store.mkdir()
    coord = coordinator(tools, cfg, store, "agents", extra=(
        "--node", "node-a", "--part-agent", f"node-b={shards['shard02'].address}",
        "--part-agent", f"node-a={shards['shard01'].address}",
        "--part-agent", "node-c=db-elsewhere.example:27017"))
    assigned = coord.wait_for_event(lambda e: e.get("event") == "part-assigned", timeout=60)
    assert assigned and assigned["shard"] == "shard02" and assigned["node"] == "node-b" and \
        assigned["member"] == shards["shard02"].address, assigned
    # a member the shard does not list never gets the source's credentials
    wrong = part(tools, cfg.uri_file, store, "agents", "shard02", "--via-cluster", "--member",
                 shards["shard01"].address).finish(timeout=60)
    assert wrong.returncode != 0 and "is not a member of shard shard02" in wrong.output, \
        wrong.describe()
    # the member beside node-b, read directly (what NodePriority= chose it for)
    remote = part(tools, cfg.uri_file, store, "agents", "shard02", "--via-cluster", "--node",
                  "node-b", "--member", shards["shard02"].address)
    prun = h.expect_ok(remote.finish())
    assert f"{shards['shard02'].address}/?directConnection=true" in prun.output, prun.describe()
    run = h.expect_ok(coord.finish())
    events = [e for e in run.events if e.get("event") == "part-assigned"]
    assert [e["shard"] for e in events] == ["shard02"], events  # shard01 is node-a's own: here
    manifest = json.loads((store / "cl" / "agents.parts" / "shard02.manifest.json").read_text())
    assert manifest["node"] == "node-b", manifest
    manifest = json.loads((store / "cl" / "agents.parts" / "shard01.manifest.json").read_text())
    assert manifest["node"] == "node-a", manifest
    # NodePriority=secondary: a one-member set has none, so nothing is handed out (taken here)
    run = h.expect_ok(coordinator(tools, cfg, store, "prim", extra=(
        "--node", "node-a", "--node-priority", "secondary",
        "--part-agent", f"node-b={shards['shard02'].address}")).finish())
    assert not [e for e in run.events if e.get("event") == "part-assigned"], run.events
    # a part for a shard the cluster does not have
    run = part(tools, cfg.uri_file, store, "nosuch", "shard09", "--via-cluster").finish(timeout=60)
    assert run.returncode != 0 and "no shard 'shard09'" in run.output, run.describe()


def test_a_part_is_taken_once_and_only_when_handed_out(tools, source, tmp_path):
    """A second process offering to take a part another one took is refused before it writes
    anything (two would mix their archives and manifests under the same keys); a process
    offering to take a part the coordinator takes itself is refused too."""
    cfg, shards = source
    store = tmp_path / "store"
    store.mkdir()
    shard02 = uri_file(tmp_path, shards["shard02"], "shard02-uri")
    shard01 = uri_file(tmp_path, shards["shard01"], "shard01-uri")
    with server_paused(shards["shard02"]):  # the first taker holds on
        coord = coordinator(tools, cfg, store, "twice", "shard02")
        first = part(tools, shard02, store, "twice", "shard02", "--node", "node-b")
        wait_object(store, "twice", "shard02.alive.meet.json")
        second = part(tools, shard02, store, "twice", "shard02", "--node", "node-x").finish(timeout=60)
        assert second.returncode != 0 and "another process (node node-b) takes part shard02" in \
            second.output, second.describe()
        mine = part(tools, shard01, store, "twice", "shard01").finish(timeout=60)
        assert mine.returncode != 0 and "takes part shard01 itself" in mine.output, mine.describe()
    h.expect_ok(first.finish())
    h.expect_ok(coord.finish())
    manifest = json.loads((store / "cl" / "twice.parts" / "shard02.manifest.json").read_text())
    assert manifest["node"] == "node-b", manifest
