"""mongosnapd on a private bus: readiness, introspection, policy listing, refused calls and
secrets kept off the bus."""

from __future__ import annotations

from agent_fixtures import *  # noqa: F401,F403
from agent_fixtures import BusError, MANAGER_IFACE, MANAGER_PATH, POLICY_IFACE

import pytest


def test_agent_ready_and_introspectable(agent, ferretdb):
    agent.write_policy("nightly", ferretdb.uri)
    agent.start()
    ready = agent.notify.wait_for("READY", "1")
    status = agent.notify.wait_for("STATUS")
    assert "1 policy" in status["STATUS"], status
    assert ready

    out = agent.busctl("introspect", "io.mongosnap1", MANAGER_PATH).stdout
    for method in ("ListPolicies", "ListSnapshots", "ListRestores", "Update"):
        assert f".{method}" in out, out
    # Argument names are part of the introspection XML.
    xml = agent.busctl("introspect", "--xml-interface", "io.mongosnap1", MANAGER_PATH).stdout
    assert '<arg type="s" name="policy" direction="in"/>' in xml, xml
    assert 'name="snapshots" direction="out"' in xml, xml

    # The policy object is enumerated in the tree and introspectable with its methods.
    tree = agent.busctl("tree", "--list", "io.mongosnap1").stdout
    assert "/io/mongosnap1/policy/nightly" in tree, tree
    pol = agent.busctl("introspect", "--xml-interface", "io.mongosnap1",
                       "/io/mongosnap1/policy/nightly").stdout
    assert '<method name="TakeSnapshot">' in pol and 'name="snapshot" direction="out"' in pol, pol
    assert '<arg type="b" name="purge_remote" direction="in"/>' in pol, pol


def test_agent_lists_policies_and_reloads_on_sighup(agent, ferretdb):
    agent.write_policy("alpha", ferretdb.uri, Schedule="daily")
    (agent.policy_dir / "broken.conf").write_text("[Policy]\nSourc=mongodb://x\n")
    agent.start()
    rows = agent.list_policies()
    assert [r["name"] for r in rows] == ["alpha"], rows
    assert rows[0]["state"] == "active" and rows[0]["schedule"] == "daily"
    assert rows[0]["store"] == str(agent.store)
    errors = agent.prop(MANAGER_PATH, MANAGER_IFACE, "PolicyErrors")
    assert any("broken.conf:2" in e for e in errors), errors

    agent.write_policy("beta", ferretdb.uri)
    n = len(agent.notify.all())
    agent.proc.send_signal(__import__("signal").SIGHUP)
    agent.notify.wait_for("READY", "1", start=n)
    assert [r["name"] for r in agent.list_policies()] == ["alpha", "beta"]
    assert agent.prop("/io/mongosnap1/policy/beta", POLICY_IFACE, "Compression") == "zstd"
    assert agent.prop("/io/mongosnap1/policy/beta", POLICY_IFACE, "State") == "active"


def test_agent_refuses_invalid_calls(agent, ferretdb):
    agent.write_policy("p1", ferretdb.uri)
    agent.start()
    with pytest.raises(BusError) as ei:
        agent.call(MANAGER_PATH, MANAGER_IFACE, "ListSnapshots", "s", "nosuch")
    assert ei.value.name == "io.mongosnap1.Error.NoSuchPolicy", ei.value
    assert "nosuch" in ei.value.message

    for bad in ("../x", "a/b", ".hidden"):
        with pytest.raises(BusError) as ei:
            agent.call(MANAGER_PATH, MANAGER_IFACE, "ListSnapshots", "s", bad)
        assert ei.value.name == "io.mongosnap1.Error.InvalidArgument", (bad, ei.value)

    # Wrong argument types are refused by sd-bus before the handler with the standard error.
    with pytest.raises(BusError) as ei:
        agent.call(MANAGER_PATH, MANAGER_IFACE, "ListSnapshots", "u", 7)
    assert ei.value.name == "org.freedesktop.DBus.Error.InvalidArgs", ei.value

    # A policy that does not exist has no object.
    with pytest.raises(BusError) as ei:
        agent.call("/io/mongosnap1/policy/nosuch", POLICY_IFACE, "TakeSnapshot")
    assert ei.value.name == "org.freedesktop.DBus.Error.UnknownObject", ei.value

    # A stopped policy refuses new snapshots until started again.
    path = agent.policy_path("p1")
    agent.call(path, POLICY_IFACE, "Stop")
    assert agent.prop(path, POLICY_IFACE, "State") == "stopped"
    with pytest.raises(BusError) as ei:
        agent.call(path, POLICY_IFACE, "TakeSnapshot")
    assert ei.value.name == "io.mongosnap1.Error.PolicyStopped", ei.value
    agent.call(path, POLICY_IFACE, "Start")
    assert agent.prop(path, POLICY_IFACE, "State") == "active"


def test_agent_keeps_credentials_off_the_bus(agent, ferretdb_factory):
    secret = "s3cr3t-Pa55word"
    server = ferretdb_factory("auth", auth=("backup", secret))
    (agent.credentials / "mongo-pw").write_text(secret + "\n")
    agent.write_policy("secure", server.uri_with("backup"), Credential="mongo-pw")
    agent.start()
    path = agent.policy_path("secure")
    snap = agent.take_snapshot("secure")
    state = agent.wait_snapshot_state(snap, ("completed", "failed"))
    assert state == "completed", agent.snapshot(snap.rsplit("/", 1)[1].replace("_2d", "-"))

    dumps = [
        agent.busctl("--json=short", "call", "io.mongosnap1", MANAGER_PATH, MANAGER_IFACE,
                     "ListPolicies").stdout,
        agent.busctl("--json=short", "call", "io.mongosnap1", MANAGER_PATH, MANAGER_IFACE,
                     "Update").stdout,
        agent.busctl("introspect", "io.mongosnap1", path).stdout,
        agent.busctl("introspect", "io.mongosnap1", snap).stdout,
    ]
    for text in dumps:
        assert secret not in text, text
    assert agent.prop(path, POLICY_IFACE, "Credential") == "mongo-pw"
    assert secret not in agent.log_text()


def test_agent_watchdog_and_stopping(agent):
    agent.start(extra_env={"WATCHDOG_USEC": "400000"})
    agent.notify.wait_for("WATCHDOG", "1", timeout=5)
    assert agent.stop() == 0
    agent.notify.wait_for("STOPPING", "1", timeout=5)
    assert "1 policy" not in agent.notify.wait_for("STATUS")["STATUS"]


def test_agent_edit_policy(agent, ferretdb):
    agent.write_policy("ed", ferretdb.uri)
    agent.start()
    path = agent.policy_path("ed")
    agent.call(path, POLICY_IFACE, "Edit", "a{ss}", 2, "Compression", "gzip", "KeepLast", "5")
    assert agent.prop(path, POLICY_IFACE, "Compression") == "gzip"
    assert agent.prop(path, POLICY_IFACE, "KeepLast") == 5
    text = (agent.policy_dir / "ed.conf").read_text()
    assert "Compression=gzip" in text and "KeepLast=5" in text, text

    # A refused edit changes nothing, in memory or in the file.
    with pytest.raises(BusError) as ei:
        agent.call(path, POLICY_IFACE, "Edit", "a{ss}", 2, "Compression", "zstd", "KeepLastt", "1")
    assert ei.value.name == "io.mongosnap1.Error.InvalidArgument", ei.value
    assert "KeepLastt" in ei.value.message, ei.value
    with pytest.raises(BusError) as ei:
        agent.call(path, POLICY_IFACE, "Edit", "a{ss}", 1, "ParallelCollections", "0")
    assert ei.value.name == "io.mongosnap1.Error.InvalidArgument", ei.value
    assert agent.prop(path, POLICY_IFACE, "Compression") == "gzip"
    assert (agent.policy_dir / "ed.conf").read_text() == text
    # The edit survives a reload (it is the file now).
    agent.call("/io/mongosnap1", MANAGER_IFACE, "Reload")
    assert agent.prop(path, POLICY_IFACE, "KeepLast") == 5


def test_agent_refuses_second_instance(agent, tmp_path):
    from agent_fixtures import Agent

    agent.start()
    second = Agent(tmp_path / "second", agent.bus, agent.worker)
    try:
        second.start(wait_ready=False)
        assert second.proc.wait(timeout=20) == 1
        assert "cannot take the bus name io.mongosnap1" in second.log_text(), second.log_text()
        assert second.notify.wait_for("STATUS", timeout=5)["STATUS"].startswith("failed to start")
        assert not [m for m in second.notify.all() if m.get("READY") == "1"]
    finally:
        second.close()
    # The first one still answers.
    assert agent.list_policies() == []


def test_every_policy_that_comes_or_goes_is_announced(agent, ferretdb):
    """InterfacesAdded and InterfacesRemoved for each way a policy comes or goes: CreatePolicy,
    a file that appears at a reload, Delete, a file that vanishes at a reload."""
    import json
    import subprocess
    import threading
    import time

    agent.write_policy("deleted", ferretdb.uri)
    agent.write_policy("vanishing", ferretdb.uri)
    agent.start()
    monitor = subprocess.Popen(
        ["busctl", f"--address={agent.bus.address}", "--json=short", "monitor", "io.mongosnap1"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    seen = []

    def read():
        for line in monitor.stdout:
            try:
                seen.append(json.loads(line))
            except ValueError:
                pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def announced(member, path):
        for msg in seen:
            if msg.get("member") == member and msg["payload"]["data"][0] == path:
                data = msg["payload"]["data"][1]
                return list(data) if member == "InterfacesAdded" else data
        return None

    try:
        time.sleep(0.5)  # subscribed
        agent.call(MANAGER_PATH, MANAGER_IFACE, "CreatePolicy", "sa{ss}", "created", 1,
                   "Source", ferretdb.uri)
        agent.write_policy("appearing", ferretdb.uri)
        (agent.policy_dir / "vanishing.conf").unlink()
        agent.call(MANAGER_PATH, MANAGER_IFACE, "Reload")
        agent.call(agent.policy_path("deleted"), POLICY_IFACE, "Delete", "b", False)
        agent.wait_for(lambda: announced("InterfacesRemoved", "/io/mongosnap1/policy/deleted")
                       and announced("InterfacesRemoved", "/io/mongosnap1/policy/vanishing")
                       and announced("InterfacesAdded", "/io/mongosnap1/policy/created")
                       and announced("InterfacesAdded", "/io/mongosnap1/policy/appearing"),
                       "every policy announced", timeout=10)
    finally:
        monitor.terminate()
        monitor.wait(timeout=5)
        reader.join(timeout=5)
    for name in ("deleted", "vanishing"):
        assert POLICY_IFACE in announced("InterfacesRemoved", f"/io/mongosnap1/policy/{name}")
    for name in ("created", "appearing"):
        assert POLICY_IFACE in announced("InterfacesAdded", f"/io/mongosnap1/policy/{name}")
    # Announced once each, not once per reload.
    added = [m for m in seen if m.get("member") == "InterfacesAdded"
             and m["payload"]["data"][0] == "/io/mongosnap1/policy/created"]
    assert len(added) == 1, added
    assert sorted(r["name"] for r in agent.list_policies()) == ["appearing", "created"]
