"""Point-in-time recovery through mongosnapd: a policy with [PointInTime] Enabled=yes gets an
oplog follower with the policy; Stop commits what it read; the Policy properties and
`mongosnapctl status` show the follower and the restorable ranges; `mongosnapctl restore POLICY
--time` restores to an instant after the snapshot; a time nothing reaches is refused before the
target changes. On a private bus with real FerretDB servers and a local store."""

from __future__ import annotations

import datetime
import json
import time

import pytest

from agent_fixtures import *  # noqa: F401,F403
from toxiproxy_fixtures import *  # noqa: F401,F403
from agent_fixtures import BusError, POLICY_IFACE, SNAPSHOT_IFACE, decode, gdbus, start_restore
from test_ctl import ctl
from test_engine_oplog import live_entries, state_at, ts_tuple
import helpers as h

FINAL_SNAPSHOT = ("completed", "failed", "interrupted", "stopped")


def write_pit_policy(agent, name: str, source: str, slice_sec: str = "10s") -> None:
    path = agent.write_policy(name, source)
    path.write_text(path.read_text() + f"\n[PointInTime]\nEnabled=yes\nSliceSec={slice_sec}\n")


def make_source(server):
    client = server.client
    client.local.create_collection("oplog.rs", capped=True, size=64 * 1024 * 1024)
    client.live.items.insert_many([{"_id": i, "n": 0} for i in range(50)])
    return server




def iso(t: int) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_follower_runs_with_the_policy_and_restores_to_a_time(agent, fresh_db, ferretdb_factory):
    source = make_source(fresh_db)
    client = source.client
    write_pit_policy(agent, "pit", source.uri)
    agent.start()
    policy = agent.policy_path("pit")
    assert agent.prop(policy, POLICY_IFACE, "PointInTime") is True
    assert agent.prop(policy, POLICY_IFACE, "SliceUSec") == 10_000_000
    agent.wait_for(lambda: agent.prop(policy, POLICY_IFACE, "Follower") == "following",
                   "the follower following", 30)

    snap = agent.take_snapshot("pit")
    assert agent.wait_snapshot_state(snap, FINAL_SNAPSHOT) == "completed", \
        agent.prop(snap, SNAPSHOT_IFACE, "Error")
    for i in range(50, 80):
        client.live.items.insert_one({"_id": i, "n": 1})
        client.live.items.update_one({"_id": i - 50}, {"$set": {"n": i}})
    last = max(ts_tuple(e["ts"]) for e in client.local["oplog.rs"].find({}, {"ts": 1}))
    time.sleep(1.5)  # the follower reads them (its slice is far from closing)

    # Stop: the follower commits what it read before it exits.
    agent.call(policy, POLICY_IFACE, "Stop")
    agent.wait_for(lambda: agent.prop(policy, POLICY_IFACE, "Follower") == "stopped",
                   "the follower stopped", 30)
    slices = sorted((agent.store / "pit" / "oplog").glob("*.slice.json"))
    ends = [h.slice_end(s.name) for s in slices if "-idle" not in s.name]
    assert ends and max(ends) == last, (slices, last)
    # Stopped, it still shows what it last reported.
    stopped_ranges = agent.prop(policy, POLICY_IFACE, "Restorable")
    assert stopped_ranges and stopped_ranges[-1][1] // 1_000_000 == last[0], stopped_ranges
    assert agent.prop(policy, POLICY_IFACE, "LastSliceUSec") > 0

    agent.call(policy, POLICY_IFACE, "Start")
    agent.wait_for(lambda: agent.prop(policy, POLICY_IFACE, "Restorable"), "restorable ranges", 30)
    ranges = agent.prop(policy, POLICY_IFACE, "Restorable")
    assert ranges[-1][1] // 1_000_000 >= last[0], ranges
    listed = json.loads(ctl(agent, "--json", "list-slices", "pit").stdout)
    assert sorted(x["key"].rsplit("/", 1)[1] for x in listed) == [p.name for p in slices]
    checked = json.loads(ctl(agent, "--json", "verify-chain", "pit").stdout)
    assert checked["damaged"] == 0 and checked["gaps"] == 0 and len(checked["chains"]) == 1, checked
    assert checked["entries"] >= 60
    status = ctl(agent, "status", "pit").stdout
    assert "Point-in-time:" in status and "following" in status and "Restorable:" in status, status

    target = ferretdb_factory(name="agent-pitr-target")
    out = ctl(agent, "restore", "pit", "--time", f"{last[0]}:{last[1]}", "--to", target.uri,
              "--ns-include", "live.*", "--wait").stdout
    entries = live_entries(client)
    assert h.raw_docs(target.client.live.items) == state_at(entries, last), out
    (restore_row,) = [r for r in agent.call("/io/mongosnap1", "io.mongosnap1.Manager",
                                            "ListRestores")[0]]
    restore_path = restore_row[11]
    options = json.loads(agent.prop(restore_path, "io.mongosnap1.Restore", "Options"))
    assert options["time"] == f"{last[0]}:{last[1]}"
    assert options["plan"].startswith("snapshot pit-") and "oplog slice(s)" in options["plan"], options
    assert "restoring to" in agent.log_text()  # the worker's plan, in the agent's output

    # Before the snapshot's end: refused, and the target is left alone.
    first = min(ts_tuple(e["ts"]) for e in entries)
    with pytest.raises(BusError) as err:
        start_restore(agent, "pit", target.uri,
                      f"{{'time': <'{iso(first[0] - 60)}'>, 'ns_from': <['live.*']>, "
                      f"'ns_to': <['early.*']>}}")
    assert "point-in-time snapshot" in err.value.message or "restorable" in err.value.message
    assert "early" not in target.client.list_database_names()
    # time in microseconds is accepted too; with until it is refused.
    with pytest.raises(BusError) as err:
        start_restore(agent, "pit", target.uri,
                      f"{{'time': <uint64 {last[0] * 1_000_000}>, 'until': <'1:1'>}}")
    assert err.value.name.endswith("InvalidArgument"), err.value


def test_verify_chain_names_a_damaged_slice(agent, fresh_db):
    source = make_source(fresh_db)
    write_pit_policy(agent, "pit", source.uri)
    agent.start()
    policy = agent.policy_path("pit")
    agent.wait_for(lambda: agent.prop(policy, POLICY_IFACE, "Follower") == "following",
                   "the follower following", 30)
    for i in range(200, 230):
        source.client.live.items.insert_one({"_id": i, "pad": "z" * 100})
    time.sleep(1.5)
    agent.call(policy, POLICY_IFACE, "Stop")
    agent.wait_for(lambda: agent.prop(policy, POLICY_IFACE, "Follower") == "stopped",
                   "the follower stopped", 30)
    archive = max((agent.store / "pit" / "oplog").glob("*.oplog*"), key=lambda p: p.stat().st_size)
    h.flip_byte(archive, archive.stat().st_size // 2)
    cp = ctl(agent, "verify-chain", "pit", expect=1)
    assert "1 damaged slice" in cp.stdout, cp.stdout
    assert archive.name in cp.stderr, cp.stderr


def test_agent_stop_commits_the_open_slice(agent, fresh_db):
    source = make_source(fresh_db)
    write_pit_policy(agent, "pit", source.uri, slice_sec="10min")
    agent.start()
    policy = agent.policy_path("pit")
    agent.wait_for(lambda: agent.prop(policy, POLICY_IFACE, "Follower") == "following",
                   "the follower following", 30)
    for i in range(100, 120):
        source.client.live.items.insert_one({"_id": i})
    last = max(ts_tuple(e["ts"]) for e in source.client.local["oplog.rs"].find({}, {"ts": 1}))
    time.sleep(1.5)
    assert agent.stop() == 0
    names = [p.name for p in (agent.store / "pit" / "oplog").glob("*.slice.json")]
    want = f"{last[0]:010d}.{last[1]:010d}.slice.json"
    assert any(n.endswith(want) for n in names), (names, want)


def test_point_in_time_settings_are_checked(agent, fresh_db):
    path = agent.write_policy("bad", fresh_db.uri, Oplog="no")
    path.write_text(path.read_text() + "\n[PointInTime]\nEnabled=yes\n")
    agent.start()
    agent.wait_log("Oplog=yes")


def test_agent_killed_while_following_loses_nothing(agent, fresh_db, ferretdb_factory):
    """SIGKILL of the agent: its follower gets SIGTERM (commits what it read) while the
    restarted agent starts a new one; the chain continues with no gap and restores match."""
    source = make_source(fresh_db)
    client = source.client
    write_pit_policy(agent, "pit", source.uri)
    agent.start()
    policy = agent.policy_path("pit")
    agent.wait_for(lambda: agent.prop(policy, POLICY_IFACE, "Follower") == "following",
                   "the follower following", 30)
    snap = agent.take_snapshot("pit")
    assert agent.wait_snapshot_state(snap, FINAL_SNAPSHOT) == "completed"
    for round_ in range(3):
        for i in range(20):
            client.live.items.insert_one({"_id": 1000 * (round_ + 1) + i})
        time.sleep(0.5)
        agent.kill()
        agent.start()
        agent.wait_for(lambda: agent.prop(policy, POLICY_IFACE, "Follower") == "following",
                       "the follower following again", 30)
    last = max(ts_tuple(e["ts"]) for e in client.local["oplog.rs"].find({}, {"ts": 1}))
    time.sleep(1)
    agent.call(policy, POLICY_IFACE, "Stop")
    agent.wait_for(lambda: agent.prop(policy, POLICY_IFACE, "Follower") == "stopped",
                   "the follower stopped", 30)
    checked = json.loads(ctl(agent, "--json", "verify-chain", "pit").stdout)
    assert checked["damaged"] == 0 and checked["gaps"] == 0 and len(checked["chains"]) == 1, checked
    target = ferretdb_factory(name="agent-kill-target")
    ctl(agent, "restore", "pit", "--time", f"{last[0]}:{last[1]}", "--to", target.uri,
        "--ns-include", "live.*", "--wait")
    assert h.raw_docs(target.client.live.items) == h.raw_docs(client.live.items)


def test_edit_turns_the_follower_on_and_off(agent, fresh_db):
    source = make_source(fresh_db)
    agent.write_policy("pit", source.uri)
    agent.start()
    policy = agent.policy_path("pit")
    assert agent.prop(policy, POLICY_IFACE, "Follower") == "off"
    ctl(agent, "edit", "pit", "PointInTime.Enabled=yes", "PointInTime.SliceSec=15s")
    agent.wait_for(lambda: agent.prop(policy, POLICY_IFACE, "Follower") == "following",
                   "the follower following", 30)
    assert agent.prop(policy, POLICY_IFACE, "SliceUSec") == 15_000_000
    status = ctl(agent, "status", "pit").stdout
    print(status)
    assert "a slice every 15s" in status, status
    # A changed setting restarts it with the new one; turning it off stops it.
    ctl(agent, "edit", "pit", "PointInTime.Compression=gzip")
    agent.wait_for(lambda: agent.prop(policy, POLICY_IFACE, "SliceCompression") == "gzip",
                   "gzip slices", 30)
    agent.wait_for(lambda: agent.prop(policy, POLICY_IFACE, "Follower") == "following",
                   "the follower following again", 30)
    ctl(agent, "edit", "pit", "PointInTime.Enabled=no")
    agent.wait_for(lambda: agent.prop(policy, POLICY_IFACE, "Follower") == "off",
                   "the follower off", 30)
    # Refused settings leave it as it was.
    cp = ctl(agent, "edit", "pit", "PointInTime.SliceSec=5s", expect=2)
    assert "10s at the shortest" in cp.stderr, cp.stderr


def test_source_down_for_a_while_the_follower_resumes_without_a_gap(agent, fresh_db, toxiproxy,
                                                                     ferretdb_factory):
    """The source unreachable for a while (its proxy disabled): the follower fails, the agent
    says why and starts it again with a growing delay, and once the source is back the chain
    continues from the last committed slice with no gap."""
    from toxiproxy_fixtures import Proxy
    source = make_source(fresh_db)
    client = source.client
    proxy = Proxy(toxiproxy, "pitr-source", source.address).create()
    try:
        uri = (f"mongodb://127.0.0.1:{proxy.port}/?directConnection=true"
               "&serverSelectionTimeoutMS=2000&socketTimeoutMS=3000")
        write_pit_policy(agent, "pit", uri)
        agent.start()
        policy = agent.policy_path("pit")
        agent.wait_for(lambda: agent.prop(policy, POLICY_IFACE, "Follower") == "following",
                       "the follower following", 30)
        snap = agent.take_snapshot("pit")
        assert agent.wait_snapshot_state(snap, FINAL_SNAPSHOT) == "completed"
        for i in range(400, 420):
            client.live.items.insert_one({"_id": i})
        time.sleep(1)
        toxiproxy.request("POST", f"/proxies/{proxy.name}", {"enabled": False})
        agent.wait_for(lambda: agent.prop(policy, POLICY_IFACE, "FollowerError"),
                       "the follower's failure", 30)
        assert agent.prop(policy, POLICY_IFACE, "Follower") in ("restarting", "starting")
        for i in range(420, 440):  # written while the follower cannot read
            client.live.items.insert_one({"_id": i})
        time.sleep(3)
        toxiproxy.request("POST", f"/proxies/{proxy.name}", {"enabled": True})
        agent.wait_for(lambda: agent.prop(policy, POLICY_IFACE, "Follower") == "following",
                       "the follower following again", 60)
        for i in range(440, 460):
            client.live.items.insert_one({"_id": i})
        last = max(ts_tuple(e["ts"]) for e in client.local["oplog.rs"].find({}, {"ts": 1}))
        time.sleep(1.5)
        agent.call(policy, POLICY_IFACE, "Stop")
        agent.wait_for(lambda: agent.prop(policy, POLICY_IFACE, "Follower") == "stopped",
                       "the follower stopped", 30)
        checked = json.loads(ctl(agent, "--json", "verify-chain", "pit").stdout)
        assert checked["damaged"] == 0 and checked["gaps"] == 0, checked
        target = ferretdb_factory(name="down-target")
        ctl(agent, "restore", "pit", "--time", f"{last[0]}:{last[1]}", "--to", target.uri,
            "--ns-include", "live.*", "--wait")
        assert h.raw_docs(target.client.live.items) == h.raw_docs(client.live.items)
    finally:
        proxy.delete()
