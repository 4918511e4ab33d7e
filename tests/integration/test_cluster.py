"""Several nodes: three agents (each with its own bus, state directory and node name) coordinating
through one FerretDB ([Cluster] URI=), snapshotting a second FerretDB (the source) into a store
they share. What this shows: one snapshot per scheduled tick; a task handed to the node
NodePriority= prefers; takeover within twice the lease after the holder is SIGKILLed; identical
records on every node; Stop and Cancel given on one node reaching the node that runs the task;
policy drift reported; an agent cut off from the cluster database still serving its records.

FerretDB does not replicate: the ranking of real replica-set members is unit-tested
(tests/unit/test-member-select.c); here the coordination server's hello (one writable primary)
is the member list.
"""

from __future__ import annotations

import os
import re
import signal
import json
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Dict, List

import pytest

from agent_fixtures import *  # noqa: F401,F403
from agent_fixtures import (Agent, BusError, DBusDaemon, MANAGER_IFACE, MANAGER_PATH,
                            POLICY_IFACE, SNAPSHOT_IFACE, RESTORE_IFACE, decode, gdbus,
                            sanitizer_reports, server_paused, start_restore)
from cluster_mac import KEY, snapshot_mac
from conftest import free_port

LEASE = 6
TICK_WINDOW = 5
HEARTBEAT = 1
NODES = ("node-a", "node-b", "node-c")
DOCS = 1500


def seed(client) -> None:
    for name in ("orders", "users"):
        client["shop"][name].insert_many(
            [{"i": i, "pad": "x" * 200} for i in range(DOCS)])


class Cluster:
    def __init__(self, agents: Dict[str, Agent], coord, database: str, source, store: Path):
        self.agents = agents
        self.coord = coord
        self.database = database
        self.source = source
        self.store = store

    @property
    def db(self):
        return self.coord.client[self.database]

    def __getitem__(self, node: str) -> Agent:
        return self.agents[node]

    def start(self, *nodes: str) -> None:
        for n in nodes or NODES:
            self.agents[n].start()
        for n in nodes or NODES:
            self.agents[n].wait_for(
                lambda a=self.agents[n]: a.prop(MANAGER_PATH, MANAGER_IFACE, "Cluster") == "connected",
                f"{n} connected to the cluster database", timeout=20)

    def write_policy(self, name: str = "nightly", **keys: str) -> None:
        for a in self.agents.values():
            a.write_policy(name, self.source.uri, **keys)

    def rows(self, node: str, policy: str = "nightly"):
        return sorted((r["id"], r["node"], r["state"]) for r in self[node].list_snapshots(policy))

    def wait_identical(self, nodes=NODES, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while True:
            views = [self.rows(n) for n in nodes]
            if all(v == views[0] for v in views) and views[0]:
                return views[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"the nodes list different snapshots: {dict(zip(nodes, views))}")
            time.sleep(0.3)


def agent_config(agent: Agent, node: str, store: Path, coord_uri: str, database: str,
                 member: str = "", extra: str = "") -> None:
    agent.config.write_text(
        "[Agent]\n"
        f"Node={node}\n"
        f"DefaultStore={store}\n"
        f"WorkerPath={agent.worker}\n"
        f"StateDirectory={agent.state_dir}\n"
        f"PolicyDirectory={agent.policy_dir}\n"
        "\n[Cluster]\n"
        f"URI={coord_uri}\n"
        f"Database={database}\n"
        f"LeaseSec={LEASE}\n"
        f"HeartbeatSec={HEARTBEAT}\n"
        + (f"Member={member}\n" if member else "") + extra)


@pytest.fixture
def cluster(tools, ferretdb, ferretdb_factory, tmp_path_factory):
    source = ferretdb_factory("source")
    seed(source.client)
    database = "msc" + uuid.uuid4().hex[:12]
    store = tmp_path_factory.mktemp("shared-store")
    agents: Dict[str, Agent] = {}
    buses: List[DBusDaemon] = []
    for node in NODES:
        bus = DBusDaemon(tmp_path_factory.mktemp(f"dbus-{node}")).start()
        buses.append(bus)
        a = Agent(tmp_path_factory.mktemp(f"agent-{node}"), bus, tools.require("worker"))
        agent_config(a, node, store, ferretdb.uri, database)
        a.extra_args = ["--verbose"]
        agents[node] = a
    c = Cluster(agents, ferretdb, database, source, store)
    try:
        yield c
    finally:
        for node, a in agents.items():
            a.close()
            print(f"--- {node} log ---\n{a.log_text()[-6000:]}")
        for bus in buses:
            bus.stop()
        ferretdb.client.drop_database(database)
    for a in agents.values():
        assert not sanitizer_reports(a.log_text()), "\n\n".join(sanitizer_reports(a.log_text()))


def scheduled(agent: Agent, policy: str = "nightly") -> str:
    out = gdbus(agent, agent.policy_path(policy), POLICY_IFACE, "TakeSnapshotWithOptions",
                "{'scheduled': <true>}")
    m = re.match(r"\(objectpath '([^']+)',\)", out)
    assert m, out
    return m.group(1)


def state_on(agent: Agent, snapshot_id: str) -> str:
    for r in agent.list_snapshots():
        if r["id"] == snapshot_id:
            return r["state"]
    return ""


def children(pid: int) -> List[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


# ---- one snapshot per tick -------------------------------------------------------------------

def fire_tick(cluster) -> str:
    """Every node's timer fires for the same tick: three scheduled calls at once; the one
    snapshot they all name."""
    results: Dict[str, str] = {}
    errors: List[BaseException] = []

    def fire(node: str) -> None:
        try:
            results[node] = decode(scheduled(cluster[node]))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=fire, args=(n,)) for n in NODES]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    ids = set(results.values())
    assert len(ids) == 1, f"one tick gave several snapshots: {results}"
    return ids.pop()


def test_scheduled_tick_gives_exactly_one_snapshot(cluster, ferretdb_factory):
    for node in NODES:
        agent_config(cluster[node], node, cluster.store, cluster.coord.uri, cluster.database,
                     extra=f"TickWindowSec={TICK_WINDOW}\n")
    cluster.write_policy()
    cluster.start()
    snap = fire_tick(cluster)
    # A late timer of the same tick (RandomizedDelaySec=, a slow node) follows that snapshot.
    for node in NODES:
        assert decode(scheduled(cluster[node])) == snap

    for node in NODES:
        cluster[node].wait_for(lambda n=node: state_on(cluster[n], snap) == "completed",
                               f"{snap} completed as seen by {node}", timeout=90)
    assert cluster.db.snapshots.count_documents({"policy": "nightly"}) == 1
    rows = cluster.wait_identical()
    assert len(rows) == 1 and rows[0][2] == "completed"
    runner = rows[0][1]
    assert runner in NODES

    late = [n for n in NODES if n != runner][0]

    # The next tick (past the window), with the lease's history in place: again exactly one.
    time.sleep(TICK_WINDOW + 1)
    second = fire_tick(cluster)
    assert second != snap
    cluster[late].wait_for(lambda: state_on(cluster[late], second) == "completed",
                           f"{second} completed", timeout=90)
    assert cluster.db.snapshots.count_documents({"policy": "nightly"}) == 2

    # A snapshot asked for by hand is a new one, whatever the schedule.
    other = [n for n in NODES if n != runner][1]
    manual = decode(cluster[other].take_snapshot("nightly"))
    assert manual not in (snap, second)
    cluster[other].wait_for(lambda: state_on(cluster[other], manual) == "completed",
                            f"{manual} completed", timeout=90)
    rows = cluster.wait_identical()
    assert [r[0] for r in rows] == sorted([snap, second, manual])

    # A restore run on one node is listed on every node, with the node that ran it.
    target = ferretdb_factory("target")
    restorer = late
    path = start_restore(cluster[restorer], snap, target.uri)
    cluster[restorer].wait_for(
        lambda: cluster[restorer].prop(path, RESTORE_IFACE, "State") == "completed",
        "restore completed", timeout=90)
    assert target.client["shop"]["orders"].count_documents({}) == DOCS
    rid = decode(path)
    for node in NODES:
        cluster[node].wait_for(
            lambda n=node: any(r[0] == rid and r[9] == "completed" for r in
                               cluster[n].call(MANAGER_PATH, MANAGER_IFACE, "ListRestores")[0]),
            f"restore {rid} listed on {node}", timeout=20)
        assert cluster[node].prop(path, RESTORE_IFACE, "Node") == restorer


def test_a_persistent_timer_catching_up_joins_the_tick_it_missed(cluster):
    """A node that was down at the tick runs the missed run when it comes back (Persistent=):
    its call comes long after the tick window, but names the same nominal tick (the latest
    elapse of Schedule= at or before the call), so it follows the snapshot the others took
    instead of taking one more."""
    for node in NODES:
        agent_config(cluster[node], node, cluster.store, cluster.coord.uri, cluster.database,
                     extra="TickWindowSec=1\n")
    cluster.write_policy(Schedule="*-*-* 00:00:00")  # daily: every call today is today's tick
    cluster.start()
    a, b = cluster["node-a"], cluster["node-b"]
    snap = decode(scheduled(a))
    a.wait_for(lambda: state_on(a, snap) == "completed", f"{snap} completed", timeout=90)
    time.sleep(2.5)  # well past TickWindowSec=1: the window alone would take another snapshot
    assert decode(scheduled(b)) == snap
    assert cluster.db.snapshots.count_documents({"policy": "nightly"}) == 1
    lease = cluster.db.leases.find_one({"policy": "nightly"}, sort=[("gen", -1)])
    midnight = (int(time.time()) // 86400) * 86400 * 1_000_000
    assert lease["tick"] == midnight, lease
    # A snapshot asked for by hand is still a new one.
    manual = decode(b.take_snapshot("nightly"))
    assert manual != snap


def test_snapshot_goes_to_the_member_node_priority_prefers(cluster, ferretdb):
    # node-a runs beside the coordination server's only member (its writable primary); the
    # others name members the set does not list, so only node-a can be ranked.
    for node, member in zip(NODES, (ferretdb.address, "db-b.example:27017", "db-c.example:27017")):
        a = cluster[node]
        agent_config(a, node, cluster.store, ferretdb.uri, cluster.database, member=member)
    cluster.write_policy()
    for a in cluster.agents.values():
        a.write_policy("secondaries-only", cluster.source.uri, NodePriority="secondary")
    cluster.start()

    path = cluster["node-c"].take_snapshot("nightly")
    snap = decode(path)
    assert cluster["node-c"].prop(path, SNAPSHOT_IFACE, "Node") == "node-a"
    cluster["node-c"].wait_for(lambda: state_on(cluster["node-c"], snap) == "completed",
                               f"{snap} completed on node-a, followed from node-c", timeout=90)
    rows = cluster.wait_identical()
    assert rows == [(snap, "node-a", "completed")]
    # node-a took it: its own catalog and log have it.
    assert snap in cluster["node-a"].log_text() or state_on(cluster["node-a"], snap) == "completed"

    # No member is a secondary here: refused with a message that says what to do.
    with pytest.raises(BusError) as err:
        cluster["node-b"].take_snapshot("secondaries-only")
    assert "NodePriority=secondary" in err.value.message
    assert cluster.coord.address in err.value.message  # names each member and why it is unfit


# ---- a node dies --------------------------------------------------------------------------------

@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_holder_killed_is_taken_over_within_twice_the_lease(cluster, signed):
    """Signed ([Cluster] SigningKeyCredential=), the record of the task taken over is read,
    changed and signed again by the node that takes over."""
    if signed:
        for n in NODES:
            agent_config(cluster[n], n, cluster.store, cluster.coord.uri, cluster.database,
                         extra="SigningKeyCredential=cluster-key\n")
            (cluster[n].credentials / "cluster-key").write_bytes(KEY)
    cluster.write_policy()
    cluster.start()
    a = cluster["node-a"]
    with server_paused(cluster.source):
        path = a.take_snapshot("nightly")
        first = decode(path)
        a.wait_for(lambda: a.prop(path, SNAPSHOT_IFACE, "State") == "running", "running")
        workers = children(a.proc.pid)
        # Let node-a renew its lease at least once, so that the lease has a running holder.
        time.sleep(2 * HEARTBEAT)
        a.kill()
        for w in workers:  # the node is gone: its worker with it
            try:
                os.kill(w, signal.SIGKILL)
            except ProcessLookupError:
                pass
        killed = time.monotonic()

        b = cluster["node-b"]

        def taken_over():
            rows = b.list_snapshots("nightly")
            old = [r for r in rows if r["id"] == first]
            new = [r for r in rows if r["id"] != first and r["node"] in ("node-b", "node-c")]
            return old and old[0]["state"] == "interrupted" and new

        b.wait_for(taken_over, "takeover", timeout=3 * LEASE)
        took = time.monotonic() - killed
        print(f"takeover {took:.1f}s after the SIGKILL (lease {LEASE}s)")
        assert took <= 2 * LEASE, f"takeover took {took:.1f}s, more than twice the lease ({LEASE}s)"
        old = [r for r in b.list_snapshots("nightly") if r["id"] == first][0]
        assert "stopped renewing its lease" in old["error"]
    # With the source back, the snapshot that took over completes.
    new_id = [r["id"] for r in b.list_snapshots("nightly") if r["id"] != first][0]
    b.wait_for(lambda: state_on(b, new_id) == "completed", f"{new_id} completed", timeout=90)
    rows = cluster.wait_identical(nodes=("node-b", "node-c"))
    assert (first, "node-a", "interrupted") in rows
    doc = cluster.db.snapshots.find_one({"_id": first})
    assert doc["mac"] == (snapshot_mac(KEY, doc) if signed else None)
    # node-a comes back and lists the same records.
    a.start()
    cluster.wait_identical()


# ---- operations from any node -------------------------------------------------------------------

def test_stop_and_cancel_on_another_node_reach_the_task(cluster):
    cluster.write_policy()
    cluster.start()
    a, b, c = (cluster[n] for n in NODES)
    with server_paused(cluster.source):
        path = a.take_snapshot("nightly")
        snap = decode(path)
        a.wait_for(lambda: a.prop(path, SNAPSHOT_IFACE, "State") == "running", "running")
        # Stop given on node-b: node-a's task stops, and the policy is stopped everywhere.
        b.call(b.policy_path("nightly"), POLICY_IFACE, "Stop")
        for node in NODES:
            ag = cluster[node]
            ag.wait_for(lambda ag=ag: ag.prop(ag.policy_path("nightly"), POLICY_IFACE, "State")
                        == "stopped", f"policy stopped on {node}", timeout=15)
        a.wait_for(lambda: state_on(a, snap) == "stopped", "task stopped on node-a", timeout=30)
        with pytest.raises(BusError) as err:
            c.take_snapshot("nightly")
        assert err.value.name == "io.mongosnap1.Error.PolicyStopped"
    # Start on node-c: active everywhere again.
    c.call(c.policy_path("nightly"), POLICY_IFACE, "Start")
    for node in NODES:
        ag = cluster[node]
        ag.wait_for(lambda ag=ag: ag.prop(ag.policy_path("nightly"), POLICY_IFACE, "State")
                    == "active", f"policy active on {node}", timeout=15)
    cluster.wait_identical()

    # Cancel of node-a's running snapshot, given to node-c's object for it.
    with server_paused(cluster.source):
        path = a.take_snapshot("nightly")
        snap = decode(path)
        a.wait_for(lambda: a.prop(path, SNAPSHOT_IFACE, "State") == "running", "running")
        c.wait_for(lambda: state_on(c, snap) == "running", "node-c sees it running", timeout=15)
        c.call(path, SNAPSHOT_IFACE, "Cancel")
        a.wait_for(lambda: state_on(a, snap) == "stopped", "cancelled on node-a", timeout=30)
    c.wait_for(lambda: state_on(c, snap) == "stopped", "node-c sees it stopped", timeout=15)


def test_policy_drift_is_reported(cluster):
    cluster.write_policy(retention_KeepLast="3")
    cluster.start()
    a, b = cluster["node-a"], cluster["node-b"]
    drift = lambda ag: ag.prop(ag.policy_path("nightly"), POLICY_IFACE, "Drift")  # noqa: E731
    time.sleep(3 * HEARTBEAT)
    assert drift(a) == "" and drift(b) == ""
    b.call(b.policy_path("nightly"), POLICY_IFACE, "Edit", "a{ss}", 1, "KeepLast", "5")
    a.wait_for(lambda: "node-b" in drift(a), "drift reported on node-a", timeout=15)
    assert "KeepLast" in drift(a) and "node-c" not in drift(a)
    b.wait_for(lambda: "node-a" in drift(b) and "node-c" in drift(b), "drift on node-b", timeout=15)
    # mongosnapctl status shows it, and the unit's --scheduled call goes through mongosnapctl.
    from test_ctl import ctl
    text = ctl(a, "status", "nightly").stdout
    assert re.search(r"^\s*Drift: .*KeepLast.*node-b", text, re.M), text
    assert re.search(r"^\s*Cluster: connected$", ctl(a, "status").stdout, re.M)
    snap = ctl(a, "snapshot", "--scheduled", "nightly").stdout.strip()
    assert ctl(b, "snapshot", "--scheduled", "nightly").stdout.strip() == snap
    b.call(b.policy_path("nightly"), POLICY_IFACE, "Edit", "a{ss}", 1, "KeepLast", "3")
    a.wait_for(lambda: drift(a) == "", "drift gone on node-a", timeout=15)


# ---- the cluster database is down ---------------------------------------------------------------

def test_unreachable_cluster_database_refuses_cluster_operations(cluster):
    a = cluster["node-a"]
    secret = "cluster-pass-" + uuid.uuid4().hex
    (a.credentials / "cluster-password").write_text(secret + "\n")
    dead = f"mongodb://backup@127.0.0.1:{free_port()}/?replicaSet=rs0&authSource=admin"
    agent_config(a, "node-a", cluster.store, dead, cluster.database,
                 extra="Credential=cluster-password\n")
    a.write_policy("nightly", cluster.source.uri)
    a.start()
    a.wait_for(lambda: a.prop(MANAGER_PATH, MANAGER_IFACE, "Cluster").startswith("unreachable"),
               "cluster reported unreachable", timeout=20)
    with pytest.raises(BusError) as err:
        a.take_snapshot("nightly")
    assert err.value.name == "io.mongosnap1.Error.ClusterUnreachable", err.value
    assert "was not started" in err.value.message
    assert a.list_snapshots() == []  # local records are still served
    a.call(MANAGER_PATH, MANAGER_IFACE, "Update")
    assert secret not in a.log_text()
    assert secret not in err.value.message
    assert secret not in a.prop(MANAGER_PATH, MANAGER_IFACE, "Cluster")


def test_rebuild_on_another_node_stops_the_task_there_first(cluster):
    cluster.write_policy()
    cluster.start()
    a, b = cluster["node-a"], cluster["node-b"]
    with server_paused(cluster.source):
        path = a.take_snapshot("nightly")
        first = decode(path)
        a.wait_for(lambda: a.prop(path, SNAPSHOT_IFACE, "State") == "running", "running")
        b.wait_for(lambda: state_on(b, first) == "running", "node-b sees it running", timeout=15)
        answer: Dict[str, object] = {}

        def rebuild() -> None:
            try:
                answer["path"] = b.call(b.policy_path("nightly"), POLICY_IFACE, "Rebuild")[0]
            except BaseException as e:  # noqa: BLE001 - reported below
                answer["error"] = e

        t = threading.Thread(target=rebuild)
        t.start()
        a.wait_for(lambda: state_on(a, first) == "stopped", "node-a's task stopped", timeout=30)
    t.join(timeout=40)
    assert "error" not in answer, answer
    fresh = decode(answer["path"])
    assert fresh != first
    b.wait_for(lambda: state_on(b, fresh) == "completed", "the rebuild's snapshot", timeout=90)
    rows = cluster.wait_identical()
    assert (first, "node-a", "stopped") in rows
    assert (fresh, "node-b", "completed") in rows


def test_resync_rebuilds_the_records_from_the_store(cluster, tools):
    import sqlite3
    from test_ctl import ctl
    cluster.write_policy()
    cluster.start()
    a, b = cluster["node-a"], cluster["node-b"]
    path = a.take_snapshot("nightly")
    first = decode(path)
    a.wait_snapshot_state(path, ["completed"])
    # A snapshot no agent knows: taken by hand with the worker into the shared store.
    subprocess.run([str(tools.require("worker")), "snapshot", "--uri", cluster.source.uri,
                    "--store", str(cluster.store), "--prefix", "nightly",
                    "--name", "nightly-by-hand"], check=True, capture_output=True, timeout=120)
    # One another node took, whose record is lost everywhere: its manifest names that node
    # (Node=, not the host name), and resync keeps it that node's, with its order and origin.
    subprocess.run([str(tools.require("worker")), "snapshot", "--uri", cluster.source.uri,
                    "--store", str(cluster.store), "--prefix", "nightly",
                    "--name", "nightly-of-node-b", "--node", "node-b", "--seq", "7",
                    "--origin", "scheduled"], check=True, capture_output=True, timeout=120)
    manifest = json.loads((cluster.store / "nightly" / "nightly-of-node-b.manifest.json").read_text())
    assert manifest["node"] == "node-b", manifest
    # A manifest that is not one.
    (cluster.store / "nightly" / "broken.manifest.json").write_text("{not json")

    out = ctl(a, "resync", expect=1)
    assert "3 snapshot(s) found in the stores: 2 added, 0 corrected to completed, 0 no longer" \
        in out.stdout, out.stdout
    assert "broken.manifest.json" in out.stderr, out.stderr
    rows = cluster.wait_identical()
    assert ("nightly-by-hand", "node-a", "completed") in rows
    assert ("nightly-of-node-b", "node-b", "completed") in rows, rows
    (adopted,) = [r for r in a.list_snapshots("nightly") if r["id"] == "nightly-of-node-b"]
    assert adopted["seq"] == 7 and adopted["origin"] == "scheduled", adopted
    assert (first, "node-a", "completed") in rows
    # Resync again: nothing new (the broken manifest is still reported).
    assert ctl_json_resync(a)["added"] == 0

    # A record the agent lost track of: listed interrupted, complete in the store.
    a.stop()
    db = sqlite3.connect(a.state_dir / "mongosnap.db")
    db.execute("UPDATE snapshots SET state = 'interrupted', error = 'x' WHERE id = ?", (first,))
    db.commit()
    db.close()
    (cluster.store / "nightly" / "broken.manifest.json").unlink()
    a.start()
    # Every start checks the stores: the record is corrected without being asked.
    a.wait_for(lambda: state_on(a, first) == "completed", "the start-up check", timeout=30)
    assert "1 corrected" in a.log_text(), a.log_text()[-3000:]
    res = ctl_json_resync(a)
    assert res["corrected"] == 0 and res["problems"] == [], res

    # A manifest gone from the store: the record says so.
    (cluster.store / "nightly" / f"{first}.manifest.json").unlink()
    res = ctl_json_resync(a)
    assert res["missing"] == 1, res
    assert state_on(a, first) == "deleted"
    b.wait_for(lambda: state_on(b, first) == "deleted", "node-b sees it deleted", timeout=15)


def ctl_json_resync(agent):
    import json
    from test_ctl import ctl
    return json.loads(ctl(agent, "--json", "resync", expect=None).stdout)


# ---- point-in-time recovery --------------------------------------------------------------------

def test_one_follower_per_policy_and_a_takeover_without_a_gap(cluster, tools, ferretdb_factory):
    """One node follows the oplog (the follower's lease); SIGKILL that node with its workers:
    another node takes the lease over and continues the chain from the last committed slice,
    with no gap, and a restore to the last write matches the source."""
    import helpers as h
    client = cluster.source.client
    client.local.create_collection("oplog.rs", capped=True, size=64 * 1024 * 1024)
    for a in cluster.agents.values():
        path = a.write_policy("pit", cluster.source.uri)
        path.write_text(path.read_text() + "\n[PointInTime]\nEnabled=yes\nSliceSec=10s\n")
    cluster.start()

    def followers():
        return {n: cluster[n].prop(cluster[n].policy_path("pit"), POLICY_IFACE, "Follower")
                for n in NODES}

    def one_following():
        f = followers()
        held = [n for n, s in f.items() if s == "following"]
        return held[0] if len(held) == 1 and all(s in ("following", "elsewhere")
                                                  for s in f.values()) else None

    holder = cluster["node-a"].wait_for(one_following, "exactly one follower", timeout=20)
    agent = cluster[holder]
    snap = agent.take_snapshot("pit")
    assert agent.wait_snapshot_state(snap, ("completed", "failed", "interrupted", "stopped")) \
        == "completed"
    coll = client.live.items
    for i in range(20):
        coll.insert_one({"_id": i})
    # The holder commits a slice (SliceSec=10s) before it dies: the takeover continues from it.
    agent.wait_for(lambda: agent.prop(agent.policy_path("pit"), POLICY_IFACE, "LastSliceUSec"),
                   "a committed slice", timeout=20)
    workers = children(agent.proc.pid)
    agent.kill()
    for w in workers:
        try:
            os.kill(w, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for i in range(20, 40):
        coll.insert_one({"_id": i})
    others = [n for n in NODES if n != holder]
    killed = time.monotonic()
    cluster[others[0]].wait_for(
        lambda: any(cluster[n].prop(cluster[n].policy_path("pit"), POLICY_IFACE, "Follower")
                    == "following" for n in others), "a takeover of the follower", timeout=4 * LEASE)
    print(f"follower taken over {time.monotonic() - killed:.1f}s after the SIGKILL (lease {LEASE}s)")
    new = [n for n in others
           if cluster[n].prop(cluster[n].policy_path("pit"), POLICY_IFACE, "Follower") == "following"]
    assert len(new) == 1, followers
    b = cluster[new[0]]
    for i in range(40, 60):
        coll.insert_one({"_id": i})
    last = max((e["ts"].time, e["ts"].inc) for e in client.local["oplog.rs"].find({}, {"ts": 1}))
    time.sleep(1.5)
    b.call(b.policy_path("pit"), POLICY_IFACE, "Stop")
    b.wait_for(lambda: b.prop(b.policy_path("pit"), POLICY_IFACE, "Follower") == "stopped",
               "the follower stopped", timeout=30)
    chain = h.expect_ok(h.run_worker(tools, "verify-chain", "--store", cluster.store, "--prefix",
                                     "pit", "--json")).json()
    assert chain["damaged"] == 0 and chain["gaps"] == 0 and len(chain["chains"]) == 1, chain
    target = ferretdb_factory("pit-cluster-target")
    out = gdbus(b, MANAGER_PATH, MANAGER_IFACE, "StartRestore", "pit", target.uri,
                f"{{'time': <'{last[0]}:{last[1]}'>, 'ns_include': <['live.*']>}}")
    path = re.match(r"\(objectpath '([^']+)',\)", out).group(1)
    b.wait_for(lambda: b.prop(path, RESTORE_IFACE, "State") in ("completed", "failed"),
               "the restore", timeout=60)
    assert b.prop(path, RESTORE_IFACE, "State") == "completed", b.prop(path, RESTORE_IFACE, "Error")
    assert sorted(d["_id"] for d in target.client.live.items.find()) == list(range(60))


def test_the_follower_runs_beside_the_member_node_priority_prefers(cluster, ferretdb):
    """node-c runs beside the coordination server's only member, the others name members the
    set does not list. node-a follows first (alone); when it stops, node-b leaves the free lease
    to node-c, the node NodePriority= prefers."""
    client = cluster.source.client
    client.local.create_collection("oplog.rs", capped=True, size=16 * 1024 * 1024)
    for node, member in zip(NODES, ("db-a.example:27017", "db-b.example:27017", ferretdb.address)):
        agent_config(cluster[node], node, cluster.store, ferretdb.uri, cluster.database,
                     member=member)
        path = cluster[node].write_policy("pit", cluster.source.uri)
        path.write_text(path.read_text() + "\n[PointInTime]\nEnabled=yes\nSliceSec=10s\n")

    def follower(n):
        return cluster[n].prop(cluster[n].policy_path("pit"), POLICY_IFACE, "Follower")

    cluster.start("node-a")
    cluster["node-a"].wait_for(lambda: follower("node-a") == "following", "node-a following", 20)
    cluster.start("node-b", "node-c")
    time.sleep(2 * HEARTBEAT)
    assert (follower("node-b"), follower("node-c")) == ("elsewhere", "elsewhere")
    assert cluster["node-a"].stop() == 0  # releases the lease
    c = cluster["node-c"]
    c.wait_for(lambda: follower("node-c") == "following", "node-c following", timeout=20)
    time.sleep(2 * HEARTBEAT)
    assert follower("node-b") == "elsewhere"
