"""A cluster policy on several nodes: the agent beside each shard's member takes that shard's
part of the cluster snapshot, the coordinating node's worker meets them through the store
(engine/cluster-part.h, agent/agent-shard-part.c). Three agents share one cluster database (the
`cluster` fixture of test_cluster.py): node-a names no member (it coordinates), node-b runs
beside shard02's member, node-c beside shard01's. Shown: one cluster snapshot, one row on every
node, each part stored by the node beside its shard; a part's worker killed on its node fails
the cluster snapshot naming the shard and the node; the coordinator's worker killed, the parts
on the other nodes give up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from agent_fixtures import *  # noqa: F401,F403
from agent_fixtures import SNAPSHOT_IFACE, decode, server_paused
from cluster_mac import KEY
from test_cluster import NODES, agent_config, cluster, state_on  # noqa: F401
from test_ctl import ctl_command, ctl_env
from test_sharded import load, make_cluster, shard_config

POLICY = "cp"


def sharded(cluster, ferretdb, ferretdb_factory, signed=False):
    cfg, shards = make_cluster(ferretdb_factory, "mn", ["shard01", "shard02"])
    shard_config(cfg, "shard01", "shard02")
    load(shards)
    members = {"node-a": "", "node-b": shards["shard02"].address, "node-c": shards["shard01"].address}
    for node in NODES:
        agent_config(cluster[node], node, cluster.store, ferretdb.uri, cluster.database,
                     member=members[node],
                     extra="SigningKeyCredential=cluster-key\n" if signed else "")
        (cluster[node].credentials / "cluster-key").write_bytes(KEY)
        cluster[node].write_policy(POLICY, cfg.uri)
    cluster.start()
    return cfg, shards


def agent_member(cluster, node):
    for line in cluster[node].config.read_text().splitlines():
        if line.startswith("Member="):
            return line.split("=", 1)[1]
    return None


def workers_of(agent):
    return [int(p) for p in subprocess.run(["pgrep", "-P", str(agent.proc.pid)], capture_output=True,
                                           text=True).stdout.split()]


def final(cluster, node, snap, timeout=120):
    def done():
        s = state_on(cluster[node], snap)
        return s if s in ("completed", "failed", "interrupted") else None
    return cluster[node].wait_for(done, f"{snap} final on {node}", timeout=timeout)


def cluster_snapshot_parts(cluster):
    """A cluster snapshot taken on node-a: its object path, its id, and the node each part's
    manifest names."""
    path = cluster["node-a"].take_snapshot(POLICY)
    snap = decode(path)
    assert final(cluster, "node-a", snap) == "completed", \
        cluster["node-a"].prop(path, SNAPSHOT_IFACE, "Error")
    parts_dir = cluster.store / POLICY / f"{snap}.parts"
    return path, snap, {p: json.loads((parts_dir / f"{p}.manifest.json").read_text())["node"]
                        for p in ("shard01", "shard02", "config")}


def test_each_part_is_taken_beside_its_shard(cluster, ferretdb, ferretdb_factory):
    sharded(cluster, ferretdb, ferretdb_factory)
    path, snap, took = cluster_snapshot_parts(cluster)
    assert took == {"shard01": "node-c", "shard02": "node-b", "config": "node-a"}, took
    parts_dir = cluster.store / POLICY / f"{snap}.parts"
    assert not list(parts_dir.glob("*.meet.json"))
    assert "part shard02 handed to node node-b" in cluster["node-a"].log_text()
    for node, shard in (("node-b", "shard02"), ("node-c", "shard01")):
        text = cluster[node].log_text()
        # (the Event Log's entries go to the journal, which these agents have none of: their
        # workers' lines are checked)
        assert f"take-part of {snap}/{shard} done as asked by node node-a" in text, text[-3000:]
        cluster[node].wait_log(f"snapshot {shard} complete: ", 30)
        # read from the member beside it, directly
        member = {"node-b": "shard02", "node-c": "shard01"}[node]
        assert f"snapshot {member} of mongodb://{agent_member(cluster, node)}/?directConnection=true" \
            in text, text[-3000:]
    # one cluster snapshot, one row, on every node, with its parts on the record
    rows = cluster["node-b"].wait_for(
        lambda: [(r["id"], r["node"], r["state"]) for r in cluster["node-b"].list_snapshots(POLICY)
                 if r["state"] == "completed"], "node-b listing it complete", 30)
    assert rows == [(snap, "node-a", "completed")], rows
    assert len(cluster["node-b"].list_snapshots(POLICY)) == 1
    parts = cluster["node-a"].prop(path, SNAPSHOT_IFACE, "Parts")
    assert {p[0]: p[7] for p in parts} == took, parts  # which node took each, on the record
    out = subprocess.run(ctl_command(cluster["node-a"].bus.address, "show", snap),
                         capture_output=True, text=True, env=ctl_env(), timeout=60).stdout
    assert "shard02 (rs0): " in out and "taken by node node-b" in out, out


def stopped_part_worker(cluster, node, snap, shard):
    """node's part worker, once it told the coordinator it is alive, stopped (SIGSTOP: a hung
    process or node, which says nothing more); its pid."""
    alive = cluster.store / POLICY / f"{snap}.parts" / f"{shard}.alive.meet.json"
    pid = cluster[node].wait_for(lambda: alive.exists() and (workers_of(cluster[node]) or [None])[0],
                                 f"{node}'s part worker", 60)
    os.kill(pid, signal.SIGSTOP)
    return pid


def test_a_part_hung_or_killed_on_its_node_fails_the_cluster_snapshot(cluster, ferretdb,
                                                                       ferretdb_factory):
    sharded(cluster, ferretdb, ferretdb_factory)
    path = cluster["node-a"].take_snapshot(POLICY)
    snap = decode(path)
    pid = stopped_part_worker(cluster, "node-b", snap, "shard02")
    try:
        assert final(cluster, "node-a", snap) == "failed"
    finally:
        os.kill(pid, signal.SIGKILL)
    error = cluster["node-a"].prop(path, SNAPSHOT_IFACE, "Error")
    assert "shard02" in error and "node-b" in error and "stopped answering" in error, error
    assert not (cluster.store / POLICY / f"{snap}.cluster.json").exists()
    # node-c's part gave up with the coordinator: none of its objects stay
    cluster["node-c"].wait_for(lambda: not workers_of(cluster["node-c"]), "node-c's part ended", 60)
    left = [p.name for p in (cluster.store / POLICY / f"{snap}.parts").glob("shard01.*")
            if p.name.endswith((".manifest.json", ".zst"))]
    assert left == [], left


def test_the_coordinator_killed_the_parts_give_up(cluster, ferretdb, ferretdb_factory):
    sharded(cluster, ferretdb, ferretdb_factory)
    path = cluster["node-a"].take_snapshot(POLICY)
    snap = decode(path)
    parts_dir = cluster.store / POLICY / f"{snap}.parts"
    held = stopped_part_worker(cluster, "node-b", snap, "shard02")  # holds the barrier
    try:
        cluster["node-c"].wait_for(lambda: (parts_dir / "shard01.dumped.meet.json").exists(),
                                   "node-c's part at the barrier", 60)
        for pid in workers_of(cluster["node-a"]):
            os.kill(pid, signal.SIGKILL)
        cluster["node-c"].wait_for(lambda: not workers_of(cluster["node-c"]),
                                   "node-c's part giving up", 60)
        cluster["node-c"].wait_log("coordinator stopped answering", 30)
        assert final(cluster, "node-a", snap) in ("failed", "interrupted")
    finally:
        os.kill(held, signal.SIGCONT)
    # node-b's part, running again, finds the coordinator gone too
    cluster["node-b"].wait_for(lambda: not workers_of(cluster["node-b"]), "node-b's part giving up", 60)
    assert not (cluster.store / POLICY / f"{snap}.cluster.json").exists()
    assert not [p for p in parts_dir.glob("shard0*") if p.name.endswith((".manifest.json", ".zst"))]
    # the next cluster snapshot completes, whatever the dead one left
    path = cluster["node-a"].take_snapshot(POLICY)
    assert final(cluster, "node-a", decode(path)) == "completed", \
        cluster["node-a"].prop(path, SNAPSHOT_IFACE, "Error")


def test_a_part_agent_killed_fails_the_cluster_snapshot_at_once(cluster, ferretdb, ferretdb_factory):
    """node-b's agent killed outright (SIGKILL) while its part waits at the barrier (shard01's
    part, larger, is still dumping on node-c): its worker dies with it (PR_SET_PDEATHSIG), says
    so in the store, and the coordinator fails the cluster snapshot naming the shard and the
    node, without waiting for a time-out; node-c's part stops with it."""
    cfg, shards = sharded(cluster, ferretdb, ferretdb_factory)
    big = shards["shard01"].client["shop"]["big"]
    for start in range(0, 60000, 10000):
        big.insert_many([{"_id": i, "pad": "y" * 400} for i in range(start, start + 10000)])
    path = cluster["node-a"].take_snapshot(POLICY)
    snap = decode(path)
    parts_dir = cluster.store / POLICY / f"{snap}.parts"
    cluster["node-b"].wait_for(lambda: (parts_dir / "shard02.dumped.meet.json").exists(),
                               "node-b's part at the barrier", 60)
    assert not (parts_dir / "shard01.dumped.meet.json").exists(), "shard01 dumped too soon"
    os.kill(cluster["node-b"].proc.pid, signal.SIGKILL)
    started = time.monotonic()
    assert final(cluster, "node-a", snap) == "failed"
    assert time.monotonic() - started < 6, "it waited for a time-out"
    error = cluster["node-a"].prop(path, SNAPSHOT_IFACE, "Error")
    assert "shard02" in error and "node-b" in error and "stopped" in error, error
    assert not (cluster.store / POLICY / f"{snap}.cluster.json").exists()
    cluster["node-c"].wait_for(lambda: not workers_of(cluster["node-c"]), "node-c's part ended", 60)
    cluster["node-c"].wait_log("the coordinator gave the cluster snapshot up", 10)


def test_the_coordinating_node_dies_with_the_balancer_stopped(cluster, ferretdb, ferretdb_factory):
    """Through a mongos (fake_mongos.py's stand-in): the coordinating node dies whole (its agent
    and its worker SIGKILLed) while the balancer is stopped for its cluster snapshot. Another
    node takes the policy over once the lease runs out and records that snapshot interrupted;
    its own cluster snapshot first starts the balancer the dead one left stopped (the marker in
    the store), and completes; the dead snapshot is never listed complete."""
    from fake_mongos import FakeMongos
    cfg, shards = make_cluster(ferretdb_factory, "mnb", ["shard01", "shard02"])
    shard_config(cfg, "shard01", "shard02")
    load(shards)
    mongos = FakeMongos(cfg.address, lambda: {"config": f"rs0/{cfg.address}",
                                              **{n: f"rs0/{s.address}" for n, s in shards.items()}})
    try:
        members = {"node-a": "", "node-b": shards["shard02"].address,
                   "node-c": shards["shard01"].address}
        for node in NODES:
            agent_config(cluster[node], node, cluster.store, ferretdb.uri, cluster.database,
                         member=members[node])
            cluster[node].write_policy(POLICY, mongos.uri)
        cluster.start()
        a = cluster["node-a"]
        path = a.take_snapshot(POLICY)
        first = decode(path)
        held = stopped_part_worker(cluster, "node-b", first, "shard02")  # keeps it mid-way
        a.wait_for(lambda: mongos.balancer == "off", "the balancer stopped", 30)
        assert (cluster.store / POLICY / f"{first}.balancer.json").exists()
        # the node dies whole: frozen first (so that neither its agent sees the worker die nor
        # the worker the agent), then both killed
        workers = workers_of(a)
        os.kill(a.proc.pid, signal.SIGSTOP)
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        a.kill()
        os.kill(held, signal.SIGKILL)
        b = cluster["node-b"]

        def taken_over():
            rows = b.list_snapshots(POLICY)
            old = [r for r in rows if r["id"] == first]
            new = [r for r in rows if r["id"] != first and r["state"] == "completed"]
            return old and old[0]["state"] == "interrupted" and new
        b.wait_for(taken_over, "another node's cluster snapshot completed", timeout=120)
        assert mongos.balancer == "full", mongos.calls
        assert not (cluster.store / POLICY / f"{first}.cluster.json").exists()
        assert not (cluster.store / POLICY / f"{first}.balancer.json").exists()
        takeover = [cluster[n] for n in ("node-b", "node-c")
                    if "the balancer was stopped by a cluster snapshot whose worker died" in
                    cluster[n].log_text()]
        assert takeover, "no node took the balancer over"
        # stopped for the first, started by the takeover, stopped and started for the second
        assert mongos.calls.count("balancerstop") == 2 and \
            mongos.calls[-1] == "balancerstart", mongos.calls
    finally:
        mongos.close()


def test_a_signed_cluster_takes_its_parts_and_no_forged_one(cluster, ferretdb, ferretdb_factory):
    """With [Cluster] SigningKeyCredential= the coordinator's take-part commands are signed and
    taken beside their shards; a well-formed one nobody signed is removed and starts nothing."""
    sharded(cluster, ferretdb, ferretdb_factory, signed=True)
    commands = ferretdb.client[cluster.database]["commands"]
    b = cluster["node-b"]
    forged = "cp-20261207T000000Z"
    commands.insert_one({"node": "node-b", "op": "take-part", "policy": POLICY,
                         "task": f"{forged}/shard02", "from": "mallory",
                         "created": int(time.time() * 10**6)})
    b.wait_for(lambda: commands.count_documents({"node": "node-b"}) == 0,
               "node-b takes the command off the database", 20)
    time.sleep(1)
    assert not workers_of(b)
    assert f"take-part of {forged}/shard02" not in b.log_text()
    assert not (cluster.store / POLICY / f"{forged}.parts").exists()

    _, _, took = cluster_snapshot_parts(cluster)
    assert took == {"shard01": "node-c", "shard02": "node-b", "config": "node-a"}, took


def test_hostile_take_part_commands(cluster, ferretdb, ferretdb_factory):
    """Whoever can write the cluster database can address any node a take-part command. Each
    malformed one is refused by the agent, naming what is wrong, with no worker started. A
    well-formed one for a cluster snapshot no coordinator runs starts a part that finds no
    meeting, gives up after its time-out and leaves nothing in the store; the node then takes
    real parts as before."""
    sharded(cluster, ferretdb, ferretdb_factory)
    commands = ferretdb.client[cluster.database]["commands"]
    b = cluster["node-b"]
    hostile = [
        ({"policy": POLICY, "task": "no-shard"}, "take-part needs a policy and SNAPSHOT/SHARD"),
        ({"policy": POLICY, "task": "/shard02"}, "take-part needs a policy and SNAPSHOT/SHARD"),
        ({"policy": POLICY, "task": "x/"}, "take-part needs a policy and SNAPSHOT/SHARD"),
        ({"policy": POLICY, "task": "x/shard02/../../etc"},
         "take-part needs a policy and SNAPSHOT/SHARD"),
        ({"task": "x/shard02"}, "take-part needs a policy and SNAPSHOT/SHARD"),
        ({"policy": "not-here", "task": "not-here-20261207T000000Z/shard02"},
         "no policy 'not-here' here"),
        # names that would reach store keys and worker arguments in another shape
        ({"policy": POLICY, "task": "../shard02"}, "not a snapshot of policy cp"),
        ({"policy": POLICY, "task": "cp-20261207T000000Z/.."}, "not a snapshot of policy cp"),
        ({"policy": POLICY, "task": "cp-../shard02"}, "not a snapshot of policy cp"),
        ({"policy": POLICY, "task": "other-20261207T000000Z/shard02"},
         "not a snapshot of policy cp"),
        ({"policy": POLICY, "task": "cp-20261207T000000Z/--uri=mongodb:"},
         "not a snapshot of policy cp"),
        # the characters of a stamp, not its shape
        ({"policy": POLICY, "task": "cp--/shard02"}, "not a snapshot of policy cp"),
        ({"policy": POLICY, "task": "cp-2026/shard02"}, "not a snapshot of policy cp"),
        ({"policy": POLICY, "task": "cp-20261207T000000ZZ/shard02"},
         "not a snapshot of policy cp"),
        ({"policy": POLICY, "task": "cp-20261207T000000Z-/shard02"},
         "not a snapshot of policy cp"),
        ({"policy": POLICY, "task": "cp-20261207T000000Z-1000/shard02"},
         "not a snapshot of policy cp"),
        ({"policy": POLICY}, "a command without operation or task"),
    ]
    for doc, said in hostile:
        commands.insert_one({"node": "node-b", "op": "take-part", "from": "mallory", **doc})
        # this command's own line: the same refusal for an earlier one proves nothing
        head = f"take-part of {doc.get('task', '?')} asked by node mallory: "
        b.wait_log(head, 20)
        line = next(ln for ln in b.log_text().splitlines() if head in ln)
        assert said in line, line
        assert not workers_of(b), f"a worker started for {doc}"

    forged = "cp-20261207T000000Z"
    commands.insert_one({"node": "node-b", "op": "take-part", "policy": POLICY,
                         "task": f"{forged}/shard02", "from": "mallory"})
    b.wait_log(f"take-part of {forged}/shard02 done as asked by node mallory", 20)
    b.wait_for(lambda: not workers_of(b), "the forged part giving up", 60)
    parts_dir = cluster.store / POLICY / f"{forged}.parts"
    left = sorted(p.name for p in parts_dir.iterdir()) if parts_dir.exists() else []
    assert left == [], left
    assert not (cluster.store / POLICY / f"{forged}.cluster.json").exists()
    assert not [r for r in b.list_snapshots(POLICY) if r["id"] == forged]

    path = cluster["node-a"].take_snapshot(POLICY)
    assert final(cluster, "node-a", decode(path)) == "completed", \
        cluster["node-a"].prop(path, SNAPSHOT_IFACE, "Error")
