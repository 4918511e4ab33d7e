"""Snapshots through mongosnapd: TakeSnapshot on a real FerretDB into a local store, Stop during a
snapshot, an agent killed mid-snapshot and restarted."""

from __future__ import annotations

import signal

import pytest

from agent_fixtures import *  # noqa: F401,F403
from agent_fixtures import BusError, POLICY_IFACE, SNAPSHOT_IFACE, server_paused
from agent_fixtures import decode as snapshot_id

DOCS_PER_COLLECTION = 300
COLLECTIONS = ("orders", "users", "events")


def seed(client, db="shop"):
    for name in COLLECTIONS:
        client[db][name].insert_many([{"i": i, "name": f"{name}-{i}", "pad": "x" * 100}
                                      for i in range(DOCS_PER_COLLECTION)])
    return DOCS_PER_COLLECTION * len(COLLECTIONS)


def test_agent_snapshot_completes(agent, fresh_db):
    total = seed(fresh_db.client)
    agent.write_policy("nightly", fresh_db.uri, retention_KeepLast="3")
    agent.start()
    path = agent.take_snapshot("nightly")
    assert path.startswith("/io/mongosnap1/snapshot/"), path
    sid = snapshot_id(path)
    assert sid.startswith("nightly-"), sid
    assert agent.wait_snapshot_state(path, ("completed", "failed", "interrupted")) == "completed", \
        agent.snapshot(sid)

    row = agent.snapshot(sid)
    assert row["policy"] == "nightly" and row["node"] == "test-node"
    assert row["state"] == "completed" and row["error"] == ""
    assert row["items"] == total and row["items_total"] >= total, row
    assert row["progress"] == 100.0
    assert row["file_name"] == f"{sid}.archive.zst", row
    assert row["download_address"] == ""  # a local store has none
    assert row["task_log"] == f"MONGOSNAP_TASK={sid}"
    assert row["bytes"] > 0 and row["elapsed_usec"] > 0 and row["create_usec"] > 0
    assert row["expire_usec"] == 0  # the newest snapshot never expires
    assert row["path"] == path

    assert agent.prop(path, SNAPSHOT_IFACE, "Progress") == 100.0
    assert agent.prop(path, SNAPSHOT_IFACE, "Items") == total
    assert agent.prop(path, SNAPSHOT_IFACE, "State") == "completed"
    assert (agent.store / "nightly" / f"{sid}.manifest.json").is_file()
    assert (agent.store / "nightly" / f"{sid}.archive.zst").is_file()

    pol = agent.policy_path("nightly")
    assert agent.prop(pol, POLICY_IFACE, "LastResult") == "completed"
    assert agent.prop(pol, POLICY_IFACE, "LastRun") > 0
    assert agent.prop(pol, POLICY_IFACE, "RunningSnapshot") == "/"
    assert [s["id"] for s in agent.list_snapshots("nightly")] == [sid]
    snapshots, restores = agent.call("/io/mongosnap1", "io.mongosnap1.Manager", "Update")
    assert [(r[0], r[13]) for r in snapshots] == [(sid, "completed")] and restores == []
    assert agent.call("/io/mongosnap1", "io.mongosnap1.Manager", "ListRestores") == [[]]
    # The catalog keeps it across a restart.
    agent.stop()
    agent.start()
    assert agent.snapshot(sid)["state"] == "completed"


def test_agent_snapshot_failure_reports_worker_message(agent, tmp_path):
    # Nothing listens on this address: the worker fails with its own message.
    agent.write_policy("broken", "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=500&connectTimeoutMS=500")
    agent.start()
    path = agent.take_snapshot("broken")
    assert agent.wait_snapshot_state(path, ("completed", "failed")) == "failed"
    err = agent.prop(path, SNAPSHOT_IFACE, "Error")
    assert err and "127.0.0.1:9" in err, err
    assert agent.prop(agent.policy_path("broken"), POLICY_IFACE, "LastResult").startswith("failed: ")
    assert not list(agent.store.rglob("*.manifest.json"))


def test_agent_stop_during_snapshot(agent, ferretdb_factory):
    server = ferretdb_factory("paused")
    seed(server.client)
    agent.write_policy("slow", server.uri)
    agent.start()
    pol = agent.policy_path("slow")
    with server_paused(server):
        path = agent.take_snapshot("slow")
        agent.wait_snapshot_state(path, ("running",), timeout=20)
        assert agent.prop(pol, POLICY_IFACE, "RunningSnapshot") == path
        with pytest.raises(BusError) as ei:
            agent.call(pol, POLICY_IFACE, "TakeSnapshot")
        assert ei.value.name == "io.mongosnap1.Error.Busy", ei.value
        agent.call(pol, POLICY_IFACE, "Stop")
    state = agent.wait_snapshot_state(path, ("completed", "failed", "interrupted", "stopped"))
    assert state == "stopped", agent.prop(path, SNAPSHOT_IFACE, "Error")
    assert "stopped on request" in agent.prop(path, SNAPSHOT_IFACE, "Error")
    assert agent.prop(pol, POLICY_IFACE, "State") == "stopped"
    # Nothing partial in the store: no manifest, no archive, no temporary file.
    assert not [p for p in agent.store.rglob("*") if p.is_file()], list(agent.store.rglob("*"))
    # Stopping is not cancelling the policy's data: Start works again.
    agent.call(pol, POLICY_IFACE, "Start")
    assert agent.prop(pol, POLICY_IFACE, "State") == "active"


def test_agent_killed_mid_snapshot_marks_interrupted(agent, ferretdb_factory):
    server = ferretdb_factory("paused")
    seed(server.client)
    agent.write_policy("crashy", server.uri)
    agent.start()
    with server_paused(server):
        path = agent.take_snapshot("crashy")
        agent.wait_snapshot_state(path, ("running",), timeout=20)
        agent.kill()
    sid = snapshot_id(path)
    agent.start()
    row = agent.snapshot(sid)
    assert row["state"] == "interrupted", row
    assert "agent stopped" in row["error"], row
    assert agent.prop(path, SNAPSHOT_IFACE, "State") == "interrupted"
    # The orphaned worker got SIGTERM when the agent died and stored nothing.
    agent.wait_for(lambda: not [p for p in agent.store.rglob("*") if p.is_file()],
                   "the store to hold no partial snapshot", timeout=30)
    assert not list(agent.store.rglob("*.manifest.json"))
    # A new snapshot of the same policy works after the restart.
    path2 = agent.take_snapshot("crashy")
    assert agent.wait_snapshot_state(path2, ("completed", "failed")) == "completed"


def test_agent_sigterm_interrupts_running_task(agent, ferretdb_factory):
    server = ferretdb_factory("paused")
    seed(server.client)
    agent.write_policy("p", server.uri)
    agent.start()
    with server_paused(server):
        path = agent.take_snapshot("p")
        agent.wait_snapshot_state(path, ("running",), timeout=20)
        agent.proc.send_signal(signal.SIGTERM)
        agent.notify.wait_for("STOPPING", "1", timeout=10)
    assert agent.stop() == 0
    agent.start()
    row = agent.snapshot(snapshot_id(path))
    assert row["state"] == "interrupted" and "agent was stopped" in row["error"], row
    assert not list(agent.store.rglob("*.manifest.json"))


def test_agent_progress_signals(agent, ferretdb_factory):
    import json
    import subprocess
    import threading
    import time

    server = ferretdb_factory("paused")
    seed(server.client)
    agent.write_policy("watched", server.uri)
    agent.start()
    monitor = subprocess.Popen(
        ["busctl", f"--address={agent.bus.address}", "--json=short", "monitor", "io.mongosnap1"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    seen = []

    def read():
        for line in monitor.stdout:
            try:
                seen.append((time.monotonic(), json.loads(line)))
            except ValueError:
                pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        time.sleep(0.5)  # the monitor is subscribed before the task starts
        with server_paused(server):
            path = agent.take_snapshot("watched")
            agent.wait_snapshot_state(path, ("running",), timeout=20)
            time.sleep(2.0)  # the worker keeps reporting while the server is paused
        assert agent.wait_snapshot_state(path, ("completed", "failed")) == "completed"
        time.sleep(0.5)
    finally:
        monitor.terminate()
        monitor.wait(timeout=5)
        reader.join(timeout=5)

    changes = []
    for t, msg in seen:
        if msg.get("member") != "PropertiesChanged" or msg.get("path") != path:
            continue
        iface, changed, _invalidated = msg["payload"]["data"]
        assert iface == SNAPSHOT_IFACE
        changes.append((t, changed))
    assert changes, [m for _, m in seen][:20]
    assert any("Progress" in c for _, c in changes)
    final = [c for _, c in changes if "State" in c][-1]
    assert final["State"]["data"] == "completed" and final["Progress"]["data"] == 100.0, final
    # Progress-only announcements are rate-limited to two a second.
    progress_only = [t for t, c in changes if "State" not in c]
    assert progress_only, changes
    for a, b in zip(progress_only, progress_only[1:]):
        assert b - a >= 0.3, progress_only


def test_agent_delete_policy_removes_local_data(agent, fresh_db):
    seed(fresh_db.client)
    agent.write_policy("keep", fresh_db.uri)
    agent.write_policy("purge", fresh_db.uri)
    agent.start()
    done = {}
    for name in ("keep", "purge"):
        path = agent.take_snapshot(name)
        assert agent.wait_snapshot_state(path, ("completed", "failed")) == "completed"
        done[name] = snapshot_id(path)

    # Without purge: the policy's local backup data goes with it (only remote stores keep
    # theirs; see test_agent_s3.py), its records stay as deleted.
    agent.call(agent.policy_path("keep"), POLICY_IFACE, "Delete", "b", "false")
    assert [p["name"] for p in agent.list_policies()] == ["purge"]
    assert not (agent.policy_dir / "keep.conf").exists()
    assert agent.snapshot(done["keep"])["state"] == "deleted"
    assert not [p for p in (agent.store / "keep").rglob("*") if p.is_file()]

    agent.call(agent.policy_path("purge"), POLICY_IFACE, "Delete", "b", "true")
    assert agent.list_policies() == []
    assert agent.snapshot(done["purge"])["state"] == "deleted"
    assert not [p for p in (agent.store / "purge").rglob("*") if p.is_file()]
    with pytest.raises(BusError) as ei:
        agent.call("/io/mongosnap1/policy/purge", POLICY_IFACE, "TakeSnapshot")
    assert ei.value.name == "org.freedesktop.DBus.Error.UnknownObject", ei.value
    # The snapshots of a deleted policy stay listed by its name.
    assert [s["id"] for s in agent.list_snapshots("keep")] == [done["keep"]]


def test_agent_cancel_snapshot(agent, ferretdb_factory):
    server = ferretdb_factory("paused")
    seed(server.client)
    agent.write_policy("c", server.uri)
    agent.start()
    pol = agent.policy_path("c")
    with server_paused(server):
        path = agent.take_snapshot("c")
        agent.wait_snapshot_state(path, ("running",), timeout=20)
        agent.call(path, SNAPSHOT_IFACE, "Cancel")
    assert agent.wait_snapshot_state(
        path, ("completed", "failed", "interrupted", "stopped")) == "stopped"
    # Cancel stops the task, not the policy's schedule.
    assert agent.prop(pol, POLICY_IFACE, "State") == "active"
    assert not list(agent.store.rglob("*.manifest.json"))
    with pytest.raises(BusError) as ei:
        agent.call(path, SNAPSHOT_IFACE, "Cancel")
    assert ei.value.name == "io.mongosnap1.Error.NotRunning", ei.value


def test_agent_rebuild_policy(agent, ferretdb_factory):
    import subprocess

    server = ferretdb_factory("paused")
    seed(server.client)
    agent.write_policy("rb", server.uri)
    agent.start()
    pol = agent.policy_path("rb")

    # Idle and stopped: Rebuild starts it again and answers with the fresh snapshot.
    agent.call(pol, POLICY_IFACE, "Stop")
    (first,) = agent.call(pol, POLICY_IFACE, "Rebuild")
    assert agent.prop(pol, POLICY_IFACE, "State") == "active"
    assert agent.wait_snapshot_state(first, ("completed", "failed")) == "completed"

    # Running: the answer comes once the running worker has exited (it stops promptly on SIGTERM,
    # even with its server paused) and the fresh snapshot is queued.
    stale = agent.store / "rb" / ".tmp-rb-leftover-0123456789abcdef"
    stale.write_bytes(b"half a snapshot")
    with server_paused(server):
        running = agent.take_snapshot("rb")
        agent.wait_snapshot_state(running, ("running",), timeout=20)
        call = subprocess.Popen(
            ["busctl", f"--address={agent.bus.address}", "--json=short", "call", "io.mongosnap1",
             pol, POLICY_IFACE, "Rebuild"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = call.communicate(timeout=30)
    assert call.returncode == 0, err
    fresh = __import__("json").loads(out)["data"][0]
    assert fresh not in (first, running)
    assert agent.prop(running, SNAPSHOT_IFACE, "State") == "stopped"
    assert "rebuild" in agent.prop(running, SNAPSHOT_IFACE, "Error")
    assert agent.wait_snapshot_state(fresh, ("completed", "failed")) == "completed"
    assert not stale.exists()
    assert len(list((agent.store / "rb").glob("*.manifest.json"))) == 2


def test_agent_killed_after_the_worker_stored_the_snapshot(agent, fresh_db):
    """The window of the crash campaign's finding 2: the worker has stored archive and manifest,
    the agent dies before it records the completion. At the next start the agent checks the
    store for the tasks the last run left unfinished: the snapshot is listed completed (not
    interrupted with its objects orphaned), verifies, and counts for retention."""
    import os
    import subprocess
    import time
    seed(fresh_db.client)
    agent.write_policy("nightly", fresh_db.uri, retention_KeepLast="1")
    agent.start()
    with server_paused(fresh_db):
        path = agent.take_snapshot("nightly")
        sid = snapshot_id(path)
        agent.wait_snapshot_state(path, ("running",))
        os.kill(agent.proc.pid, signal.SIGSTOP)  # the agent cannot record anything now
    manifest = agent.store / "nightly" / f"{sid}.manifest.json"
    deadline = time.monotonic() + 60
    while not manifest.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert manifest.exists(), "the worker did not store the snapshot"
    time.sleep(0.5)  # the worker exits
    agent.kill()
    agent.start()
    assert agent.wait_snapshot_state(path, ("completed",), timeout=30) == "completed", \
        agent.snapshot(sid)
    # Listed interrupted at the start, then corrected by the check of the store.
    assert "1 corrected" in agent.log_text(), agent.log_text()[-3000:]
    cp = subprocess.run([str(agent.worker), "verify", "--store", str(agent.store),
                         "--snapshot", f"nightly/{sid}"], capture_output=True, text=True,
                        timeout=60)
    assert cp.returncode == 0, cp.stderr
    # It counts for retention: the next snapshot (KeepLast=1) expires it.
    path2 = agent.take_snapshot("nightly")
    assert agent.wait_snapshot_state(path2, ("completed", "failed")) == "completed"
    assert agent.wait_snapshot_state(path, ("expired",), timeout=30) == "expired"
    assert not manifest.exists()
