"""A policy whose Source= is a sharded cluster's config server (or mongos), through mongosnapd:
the snapshot is the cluster's (every shard and the config data, one record, one row), verify
reads every part, the record survives the resync of a restart (the scan reports the cluster
manifest as the policy's snapshot), a restore through the agent puts each part into its shard,
the download address and export are refused with the reason, and retention removes a cluster
snapshot whole (its manifest and every part).

The stand-in cluster is test_sharded.py's: three FerretDB instances, one holding config
documents shaped as a config server writes them. One agent takes the whole cluster snapshot
(the per-replica-set part agents and the coordinator's takeover are not built: see
docs/architecture.md, "Sharded clusters")."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time

from agent_fixtures import *  # noqa: F401,F403
from agent_fixtures import MANAGER_IFACE, MANAGER_PATH, POLICY_IFACE, SNAPSHOT_IFACE, RESTORE_IFACE, decode, gdbus, server_paused, start_restore
from test_agent_restore import completed_snapshot, wait_restore
from test_ctl import ctl, ctl_command, ctl_env, ctl_json
from test_sharded import DB, load, make_cluster, raw_docs, shard_config, ts_tuple


def completed_snapshot_of_replica_set(agent, ferretdb_factory):
    """A snapshot of a plain replica set beside the cluster policy: it has no parts."""
    server = ferretdb_factory("agplain")
    server.client.plain.things.insert_one({"_id": 1})
    agent.write_policy("plain", server.uri)
    agent.call(MANAGER_PATH, MANAGER_IFACE, "Reload")
    return completed_snapshot(agent, "plain")


def test_cluster_policy_through_the_agent(agent, ferretdb_factory):
    cfg, shards = make_cluster(ferretdb_factory, "agsrc", ["shard01", "shard02"])
    shard_config(cfg, "shard01", "shard02")
    load(shards)
    agent.write_policy("cl", cfg.uri, retention_KeepLast="1")
    agent.start()

    snap1 = completed_snapshot(agent, "cl")
    sid1 = decode(snap1)
    assert agent.prop(snap1, SNAPSHOT_IFACE, "ArchiveKey") == f"cl/{sid1}.cluster.json"
    assert agent.prop(snap1, SNAPSHOT_IFACE, "PointInTime") is True
    assert (agent.store / "cl" / f"{sid1}.parts" / "shard01.manifest.json").exists()
    assert (agent.store / "cl" / f"{sid1}.parts" / "config.manifest.json").exists()
    rows = ctl_json(agent, "list-snapshots")
    assert [r["id"] for r in rows if r.get("policy") == "cl"] == [sid1], rows  # one row, no parts
    # its parts on the bus: every shard's and the config data's, each as its manifest says
    parts = agent.prop(snap1, SNAPSHOT_IFACE, "Parts")
    assert [p[0] for p in parts] == ["shard01", "shard02", "config"], parts
    for shard, rs, manifest, documents, stored, t, i, node in parts:
        assert node == "test-node", (shard, node)  # one agent: every part is its own
        assert manifest == f"cl/{sid1}.parts/{shard}.manifest.json"
        m = json.loads((agent.store / manifest).read_text())
        assert documents == m["total_documents"] and stored == m["archive"]["size"], (shard, m)
        assert rs == ("rs0" if shard != "config" else "") and t > 0, (shard, rs, t, i)
    assert sum(p[3] for p in parts) == agent.prop(snap1, SNAPSHOT_IFACE, "Items")
    out = ctl(agent, "show", sid1).stdout
    for shard, rs, manifest, documents, *_ in parts:
        assert f"{shard}{' (rs0)' if rs else ''}: {documents} documents" in out and manifest in out, out
    plain = agent.prop(completed_snapshot_of_replica_set(agent, ferretdb_factory), SNAPSHOT_IFACE, "Parts")
    assert plain == [], plain

    gdbus(agent, snap1, SNAPSHOT_IFACE, "Verify")
    agent.wait_for(lambda: agent.prop(snap1, SNAPSHOT_IFACE, "VerifyState") in ("passed", "failed"),
                   "verification")
    assert agent.prop(snap1, SNAPSHOT_IFACE, "VerifyState") == "passed", \
        agent.prop(snap1, SNAPSHOT_IFACE, "VerifyError")

    run = subprocess.run(ctl_command(agent.bus.address, "download-url", sid1), capture_output=True,
                         text=True, env=ctl_env(), timeout=60)
    assert run.returncode != 0 and "cluster snapshot" in run.stderr, run.stderr

    # the resync at a restart finds it in the store as it was (not "manifest missing"); a record
    # without its parts (written before records kept them) has them back from the cluster manifest
    agent.stop()
    with sqlite3.connect(agent.state_dir / "mongosnap.db") as db:
        assert db.execute("UPDATE snapshots SET parts = NULL WHERE id = ?", (sid1,)).rowcount == 1
    agent.start()
    agent.wait_log("resync: 2 snapshot(s) in 1 store(s): 0 added, 0 corrected, 0 missing", 60)
    assert agent.prop(snap1, SNAPSHOT_IFACE, "State") == "completed"
    assert agent.prop(snap1, SNAPSHOT_IFACE, "Parts") == parts

    # a restore through the agent: each part into the target shard of its name, config data too
    tcfg, tshards = make_cluster(ferretdb_factory, "agdst", ["shard01", "shard02"])
    path = start_restore(agent, sid1, tcfg.uri)
    assert wait_restore(agent, path, timeout=180) == "completed", \
        agent.prop(path, RESTORE_IFACE, "Error")
    for name in ("shard01", "shard02"):
        assert raw_docs(tshards[name], f"{DB}.orders") == raw_docs(shards[name], f"{DB}.orders")
    assert tcfg.client.config.databases.find_one({"_id": DB})["primary"] == "shard01"

    # through mongosnapctl into a cluster whose shards have other names: --shard-map
    ocfg, oshards = make_cluster(ferretdb_factory, "agalt", ["alpha", "beta"])
    run = subprocess.run(ctl_command(agent.bus.address, "restore", sid1, "--to", ocfg.uri,
                                     "--shard-map", "shard01=alpha,shard02=beta", "--wait"),
                         capture_output=True, text=True, env=ctl_env(), timeout=240)
    assert run.returncode == 0, run.stderr
    assert raw_docs(oshards["alpha"], f"{DB}.orders") == raw_docs(shards["shard01"], f"{DB}.orders")
    assert ocfg.client.config.databases.find_one({"_id": DB})["primary"] == "alpha"
    # refused before anything is queued: a bad map, a filter on a cluster snapshot
    for extra, why in ((["--shard-map", "shard01=alpha,shard02=alpha"], "twice"),
                       (["--shard-map", "=alpha"], "shard"),
                       (["--ns-include", "shop.*"], "cluster snapshot")):
        run = subprocess.run(ctl_command(agent.bus.address, "restore", sid1, "--to", ocfg.uri, *extra),
                             capture_output=True, text=True, env=ctl_env(), timeout=60)
        assert run.returncode == 2 and why in run.stderr, (extra, run.stderr)

    # one shard's part alone into a replica set, for inspection (with a rename, as any restore)
    lone = ferretdb_factory("aglone")
    run = subprocess.run(ctl_command(agent.bus.address, "restore", sid1, "--to", lone.uri,
                                     "--part", "shard02", "--ns-from", f"{DB}.*",
                                     "--ns-to", "inspect.*", "--wait"),
                         capture_output=True, text=True, env=ctl_env(), timeout=240)
    assert run.returncode == 0, run.stderr
    assert raw_docs(lone, "inspect.orders") == raw_docs(shards["shard02"], f"{DB}.orders")
    assert DB not in lone.client.list_database_names()
    # refused: with a time, the config part, a shard it does not have, into a cluster
    run = subprocess.run(ctl_command(agent.bus.address, "restore", sid1, "--to", lone.uri,
                                     "--part", "shard02", "--until", "1:1"),
                         capture_output=True, text=True, env=ctl_env(), timeout=60)
    assert run.returncode == 2 and "consistency point" in run.stderr, run.stderr
    for part, target, why in (("config", lone.uri, "--part takes a shard"),
                              ("shard09", lone.uri, "its shards: shard01, shard02"),
                              ("shard01", ocfg.uri, "a part alone goes into a replica set")):
        run = subprocess.run(ctl_command(agent.bus.address, "restore", sid1, "--to", target,
                                         "--part", part, "--wait"),
                             capture_output=True, text=True, env=ctl_env(), timeout=120)
        assert run.returncode != 0 and why in run.stderr + run.stdout, (part, run.stderr)
    assert raw_docs(oshards["alpha"], f"{DB}.orders") == raw_docs(shards["shard01"], f"{DB}.orders")

    # retention (KeepLast=1) removes the first cluster snapshot whole once a second completes
    snap2 = completed_snapshot(agent, "cl")
    sid2 = decode(snap2)
    agent.wait_for(lambda: not (agent.store / "cl" / f"{sid1}.cluster.json").exists(),
                   "retention removing the first cluster snapshot")
    agent.wait_for(lambda: not [p for p in (agent.store / "cl").rglob(f"{sid1}.parts/*")
                                if p.is_file()],
                   "the first cluster snapshot's parts removed")
    agent.wait_log("removed 7 object(s)\n")  # the manifest, three parts' archives and manifests
    assert (agent.store / "cl" / f"{sid2}.cluster.json").exists()
    assert (agent.store / "cl" / f"{sid2}.parts" / "shard02.manifest.json").exists()
    out = ctl(agent, "show", sid2).stdout
    assert f"cl/{sid2}.cluster.json" in out, out


def test_cluster_snapshot_cut_by_a_power_loss(agent, ferretdb_factory):
    """The agent and its worker killed outright while one shard's part hangs (its server
    stopped) and the others wait for it: the restarted agent says interrupted and never lists
    the cluster snapshot; the next snapshot of the policy clears what the cut left. A cluster
    snapshot whose cluster manifest is lost after its parts committed (the last step's window)
    is found by the resync: the record says so and its parts are removed."""
    cfg, shards = make_cluster(ferretdb_factory, "agkill", ["shard01", "shard02"])
    shard_config(cfg, "shard01", "shard02")
    load(shards)
    agent.write_policy("ck", cfg.uri)
    agent.start()
    with server_paused(shards["shard02"]):
        path = agent.take_snapshot("ck")
        sid = decode(path)
        parts = agent.store / "ck" / f"{sid}.parts"
        agent.wait_log("part shard01 dumped")
        workers = subprocess.run(["pgrep", "-P", str(agent.proc.pid)], capture_output=True,
                                 text=True).stdout.split()
        assert workers, "no worker under the agent"
        for pid in workers:
            os.kill(int(pid), signal.SIGKILL)
        agent.kill()
    left = sorted(str(p.relative_to(agent.store)) for p in (agent.store / "ck").rglob("*") if p.is_file())
    assert not (agent.store / "ck" / f"{sid}.cluster.json").exists()
    assert not [p for p in left if p.endswith(".manifest.json")], left  # no part committed
    agent.start()
    agent.wait_for(lambda: agent.prop(path, SNAPSHOT_IFACE, "State") == "interrupted", "interrupted")
    rows = ctl_json(agent, "list-snapshots")
    assert [r["state"] for r in rows if r["id"] == sid] == ["interrupted"], rows
    snap2 = completed_snapshot(agent, "ck")
    sid2 = decode(snap2)
    leftovers = [p for p in parts.rglob("*") if p.is_file()] if parts.exists() else []
    assert not leftovers, (left, leftovers)

    # the window between the last part's commit and the cluster manifest: the manifest is gone
    (agent.store / "ck" / f"{sid2}.cluster.json").unlink()
    agent.stop()
    done_before = agent.log_text().count(" store(s): ")
    agent.start()
    # the startup resync first: a resync asked for while one runs is that one
    agent.wait_for(lambda: agent.log_text().count(" store(s): ") > done_before, "the startup resync")
    # the parts of a cluster snapshot whose record is completed are left alone (its manifest
    # may have been written since the listing) until a full resync judges the record
    assert (agent.store / "ck" / f"{sid2}.parts" / "shard01.manifest.json").exists()
    cp = ctl(agent, "resync")
    assert "1 no longer in their store, 1 removal(s) finished" in cp.stdout, cp.stdout
    agent.wait_for(lambda: agent.prop(snap2, SNAPSHOT_IFACE, "State") == "deleted",
                   "the record of the cluster snapshot without its manifest corrected")
    agent.wait_for(lambda: not [p for p in (agent.store / "ck" / f"{sid2}.parts").rglob("*")
                                if p.is_file()],
                   "the parts left without a cluster manifest removed")


def test_cluster_policy_stop_rebuild_edit_delete(agent, ferretdb_factory):
    """What an operator does to any policy, on a cluster policy: a running cluster snapshot
    stopped (one shard's server hung, the others waiting for it at the barrier) ends stopped
    with nothing listed or committed; Rebuild clears what the stopped one left in the parts'
    directory and takes a fresh one; an edited policy (retention) is still a cluster policy and
    its retention removes a cluster snapshot whole; Delete takes the local cluster snapshots,
    manifests and every part, with it."""
    cfg, shards = make_cluster(ferretdb_factory, "agops", ["shard01", "shard02"])
    shard_config(cfg, "shard01", "shard02")
    load(shards)
    agent.write_policy("co", cfg.uri)
    agent.start()
    pol = agent.policy_path("co")

    with server_paused(shards["shard02"]):
        running = agent.take_snapshot("co")
        sid = decode(running)
        agent.wait_log("part shard01 dumped")
        gdbus(agent, running, SNAPSHOT_IFACE, "Cancel")
        assert agent.wait_snapshot_state(running, ("stopped", "failed", "completed"),
                                         timeout=60) == "stopped", \
            agent.prop(running, SNAPSHOT_IFACE, "Error")
    assert not (agent.store / "co" / f"{sid}.cluster.json").exists()
    parts_dir = agent.store / "co" / f"{sid}.parts"
    assert not list(parts_dir.glob("*.manifest.json")) if parts_dir.exists() else True
    assert agent.prop(running, SNAPSHOT_IFACE, "Parts") == []

    (fresh,) = agent.call(pol, POLICY_IFACE, "Rebuild")
    assert agent.wait_snapshot_state(fresh, ("completed", "failed")) == "completed", \
        agent.prop(fresh, SNAPSHOT_IFACE, "Error")
    fid = decode(fresh)
    assert agent.prop(fresh, SNAPSHOT_IFACE, "ArchiveKey") == f"co/{fid}.cluster.json"
    left = [p for p in parts_dir.rglob("*") if p.is_file()] if parts_dir.exists() else []
    assert not left, left  # the stopped snapshot's unfinished part files

    # edited: KeepLast=1; still a cluster policy, its retention removes the older one whole
    agent.write_policy("co", cfg.uri, retention_KeepLast="1")
    agent.call(MANAGER_PATH, MANAGER_IFACE, "Reload")
    newer = completed_snapshot(agent, "co")
    nid = decode(newer)
    assert agent.prop(newer, SNAPSHOT_IFACE, "ArchiveKey") == f"co/{nid}.cluster.json"
    agent.wait_for(lambda: agent.prop(fresh, SNAPSHOT_IFACE, "State") == "expired", "retention")
    agent.wait_for(lambda: not [p for p in (agent.store / "co" / f"{fid}.parts").rglob("*")
                                if p.is_file()], "the expired snapshot's parts removed")

    # deleted: the local cluster snapshot goes with it, manifest and parts
    agent.call(pol, POLICY_IFACE, "Delete", "b", False)
    agent.wait_for(lambda: agent.prop(newer, SNAPSHOT_IFACE, "State") == "deleted", "deleted")
    agent.wait_for(lambda: not [p for p in (agent.store / "co").rglob("*") if p.is_file()
                                and ".tmp" not in p.name],
                   "every object of the deleted cluster policy removed")


def test_cluster_policy_point_in_time(agent, ferretdb_factory):
    """A cluster policy with point-in-time recovery on: its follower follows every part (each
    shard's replica set and the config server), the policy's Restorable is the cluster's, and
    mongosnapctl restore POLICY --time puts every shard at that time, past its snapshot."""
    cfg, shards = make_cluster(ferretdb_factory, "agpit", ["shard01", "shard02"])
    shard_config(cfg, "shard01", "shard02")
    load(shards)
    path = agent.write_policy("cp", cfg.uri)
    path.write_text(path.read_text() + "\n[PointInTime]\nEnabled=yes\nSliceSec=10s\n")
    agent.start()
    policy = agent.policy_path("cp")
    agent.wait_for(lambda: agent.prop(policy, POLICY_IFACE, "Follower") == "following",
                   "the follower following", 30)
    snap = completed_snapshot(agent, "cp")
    sid = decode(snap)
    for base, s in zip((0, 10_000), shards.values()):
        for i in range(20):
            s.client[DB].orders.update_one({"_id": base + i}, {"$set": {"later": i}})
    when = max(max(ts_tuple(e["ts"]) for e in s.client.local["oplog.rs"].find({}, {"ts": 1}))
               for s in shards.values())
    agent.wait_for(lambda: (agent.prop(policy, POLICY_IFACE, "Restorable") or [[0, 0]])[-1][1]
                   >= (when[0] + 1) * 1_000_000, "the cluster's restorable range past the writes", 60)
    for part in ("shard01", "shard02", "config"):
        assert list((agent.store / "cp" / "oplog" / "parts" / part / "oplog").glob("*.slice.json")), part
    listed = json.loads(ctl(agent, "--json", "list-slices", "cp").stdout)
    assert {x["key"].split("/")[3] for x in listed} == {"shard01", "shard02", "config"}, listed
    checked = json.loads(ctl(agent, "--json", "verify-chain", "cp").stdout)
    assert checked["damaged"] == 0 and checked["gaps"] == 0 and len(checked["chains"]) == 3, checked

    tcfg, tshards = make_cluster(ferretdb_factory, "agpitdst", ["shard01", "shard02"])
    run = subprocess.run(ctl_command(agent.bus.address, "restore", "cp", "--time",
                                     f"{when[0]}:{when[1]}", "--to", tcfg.uri, "--wait"),
                         capture_output=True, text=True, env=ctl_env(), timeout=240)
    assert run.returncode == 0, run.stderr
    for name in ("shard01", "shard02"):
        got = raw_docs(tshards[name], f"{DB}.orders")
        assert got == raw_docs(shards[name], f"{DB}.orders"), name
        assert sum(b"later" in d for d in got) == 20, name  # past the snapshot
    (row,) = agent.call(MANAGER_PATH, MANAGER_IFACE, "ListRestores")[0]
    options = json.loads(agent.prop(row[11], RESTORE_IFACE, "Options"))
    assert options["plan"].startswith(f"snapshot {sid}") and "oplog slice(s)" in options["plan"], options


def test_worker_killed_with_the_balancer_stopped(agent, ferretdb_factory):
    """A cluster policy whose source is a mongos (fake_mongos.py's stand-in): the worker stops
    the balancer, then is killed (SIGKILL: no chance to start it again); the agent sees it die
    with the balancer stopped and starts it again through a worker of its own (the takeover),
    removing the snapshot's marker."""
    from fake_mongos import FakeMongos
    cfg, shards = make_cluster(ferretdb_factory, "agbal", ["shard01", "shard02"])
    shard_config(cfg, "shard01", "shard02")
    load(shards)
    mongos = FakeMongos(cfg.address, lambda: {"config": f"rs0/{cfg.address}",
                                              **{n: f"rs0/{s.address}" for n, s in shards.items()}})
    agent.write_policy("cb", mongos.uri)
    agent.start()
    with server_paused(shards["shard02"]):
        path = agent.take_snapshot("cb")
        sid = decode(path)
        agent.wait_for(lambda: mongos.balancer == "off", "the worker stopping the balancer", 60)
        agent.wait_for(lambda: (agent.store / "cb" / f"{sid}.balancer.json").exists(), "its marker")
        workers = subprocess.run(["pgrep", "-P", str(agent.proc.pid)], capture_output=True,
                                 text=True).stdout.split()
        assert workers, "no worker under the agent"
        for pid in workers:
            os.kill(int(pid), signal.SIGKILL)
        assert agent.wait_snapshot_state(path, ("failed", "interrupted"), 60)
        agent.wait_for(lambda: mongos.balancer == "full", "the agent starting the balancer again", 60)
    assert mongos.calls[-2:] == ["balancerstop", "balancerstart"], mongos.calls
    agent.wait_for(lambda: not (agent.store / "cb" / f"{sid}.balancer.json").exists(),
                   "the marker removed")
    assert "died with the balancer stopped: starting it again" in agent.log_text()
    # the policy goes on: the next cluster snapshot through the mongos completes
    snap = completed_snapshot(agent, "cb")
    assert agent.prop(snap, SNAPSHOT_IFACE, "ArchiveKey").endswith(".cluster.json")
    assert mongos.balancer == "full"
    mongos.close()


def test_restore_worker_killed_with_the_target_balancer_stopped(agent, ferretdb_factory):
    """A cluster snapshot restored through the agent into a cluster behind a mongos: the worker
    stops the target's balancer and is killed (SIGKILL) while a target shard hangs; the agent,
    which kept the target's address for this (the store keeps no marker of a target), starts the
    balancer again. A balancer an operator had turned off is left off by the same kill."""
    from fake_mongos import FakeMongos
    cfg, shards = make_cluster(ferretdb_factory, "agrsrc", ["shard01", "shard02"])
    shard_config(cfg, "shard01", "shard02")
    load(shards)
    agent.write_policy("cr", cfg.uri)
    agent.start()
    sid = decode(completed_snapshot(agent, "cr"))
    tcfg, tshards = make_cluster(ferretdb_factory, "agrdst", ["shard01", "shard02"])
    mongos = FakeMongos(tcfg.address, lambda: {"config": f"rs0/{tcfg.address}",
                                               **{n: f"rs0/{s.address}" for n, s in tshards.items()}})

    def killed_restore(want_stop: bool) -> str:
        with server_paused(tshards["shard02"]):
            path = start_restore(agent, sid, mongos.uri)
            if want_stop:
                agent.wait_for(lambda: mongos.balancer == "off", "the worker stopping the balancer", 60)
            else:
                agent.wait_for(lambda: "balancerstatus" in mongos.calls, "the worker asking", 60)
                time.sleep(1)  # past the status: the worker hangs on shard02 now
            workers = subprocess.run(["pgrep", "-P", str(agent.proc.pid)], capture_output=True,
                                     text=True).stdout.split()
            assert workers, "no worker under the agent"
            for pid in workers:
                os.kill(int(pid), signal.SIGKILL)
            assert wait_restore(agent, path, timeout=60) in ("failed", "interrupted")
        return path

    path = killed_restore(True)
    agent.wait_for(lambda: mongos.balancer == "full", "the agent starting the balancer again", 60)
    assert mongos.calls[-2:] == ["balancerstop", "balancerstart"], mongos.calls
    assert "its worker died with the balancer stopped: starting it again" in agent.log_text()
    assert agent.prop(path, RESTORE_IFACE, "State") in ("failed", "interrupted")

    # an operator turned the balancer off: the restore leaves it so, and so does its death
    mongos.balancer = "off"
    mongos.calls.clear()
    killed_restore(False)
    time.sleep(3)
    assert mongos.balancer == "off" and "balancerstart" not in mongos.calls, mongos.calls
    mongos.close()
