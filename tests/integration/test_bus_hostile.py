"""Hostile D-Bus input: every method of every interface called with wrong signatures, huge strings,
path-like and control-character names, oversized lists and a bounded flood. The agent must answer
each call with an error that says what is wrong (or do the right thing), never crash, never write
outside its directories, and stay responsive. Sanitizer reports in the agent's log fail the test
(agent fixture).

jeepney builds the messages, so that signatures busctl and gdbus would refuse to send can be sent.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from typing import List, Tuple

import pytest
from jeepney import DBusAddress, MessageType, new_method_call
from jeepney.io.blocking import open_dbus_connection

from agent_fixtures import *  # noqa: F401,F403
from agent_fixtures import (BUS_NAME, MANAGER_IFACE, MANAGER_PATH, POLICY_IFACE, RESTORE_IFACE,
                            SNAPSHOT_IFACE, decode)

MIB = 1024 * 1024
FLOOD_CALLS = 2000
FLOOD_WINDOW = 100
REPLY_TIMEOUT = 20.0


class Bus:
    def __init__(self, address: str):
        self.conn = open_dbus_connection(bus=address)

    def call(self, path: str, iface: str, method: str, signature: str = "", body: tuple = ()):
        msg = new_method_call(DBusAddress(path, bus_name=BUS_NAME, interface=iface), method,
                              signature or None, body)
        reply = self.conn.send_and_get_reply(msg, timeout=REPLY_TIMEOUT)
        if reply.header.message_type == MessageType.error:
            name = reply.header.fields.get(4)  # ERROR_NAME
            text = reply.body[0] if reply.body else ""
            return ("error", name, text)
        return ("ok", reply.body, None)

    def close(self):
        self.conn.close()


@pytest.fixture
def bus_and_agent(agent, ferretdb):
    agent.write_policy("nightly", ferretdb.uri)
    agent.start()
    b = Bus(agent.bus.address)
    try:
        yield b, agent
    finally:
        b.close()


def alive(bus: Bus) -> bool:
    kind, body, _ = bus.call(MANAGER_PATH, "org.freedesktop.DBus.Properties", "Get", "ss",
                             (MANAGER_IFACE, "Version"))
    return kind == "ok"


def methods_of(agent, path: str) -> List[Tuple[str, str, str]]:
    """(interface, method, input signature) of every method the object introspects."""
    xml = agent.busctl("introspect", "--xml-interface", BUS_NAME, path).stdout
    out = []
    for iface in ET.fromstring(xml).findall("interface"):
        if not iface.get("name", "").startswith("io.mongosnap1"):
            continue
        for m in iface.findall("method"):
            sig = "".join(a.get("type") for a in m.findall("arg") if a.get("direction") == "in")
            out.append((iface.get("name"), m.get("name"), sig))
    return out


# A wrong body for each signature: another type, fewer arguments, more arguments.
WRONG_BODIES = [("u", (7,)), ("", ()), ("sss", ("a", "b", "c")), ("a{sv}", ({},)),
                ("t", (2**64 - 1,)), ("as", (["x"] * 3,))]


def test_every_method_refuses_wrong_signatures(bus_and_agent):
    bus, agent = bus_and_agent
    snap_path = agent.take_snapshot("nightly")
    agent.wait_snapshot_state(snap_path, ["completed"])
    objects = [MANAGER_PATH, agent.policy_path("nightly"), snap_path]
    tried = 0
    for path in objects:
        for iface, method, sig in methods_of(agent, path):
            for wrong_sig, body in WRONG_BODIES:
                if wrong_sig == sig:
                    continue
                kind, name, text = bus.call(path, iface, method, wrong_sig, body)
                tried += 1
                assert kind == "error", (iface, method, wrong_sig)
                assert name in ("org.freedesktop.DBus.Error.InvalidArgs",
                                "io.mongosnap1.Error.InvalidArgument"), (method, wrong_sig, name)
                assert text, (method, wrong_sig)
    print(f"{tried} calls with a wrong signature")
    assert tried > 60
    assert alive(bus)


def test_huge_strings_and_lists_are_refused_cleanly(bus_and_agent):
    bus, agent = bus_and_agent
    huge = "p" * MIB
    policy = agent.policy_path("nightly")
    cases = [
        (MANAGER_PATH, MANAGER_IFACE, "ListSnapshots", "s", (huge,)),
        (MANAGER_PATH, MANAGER_IFACE, "CreatePolicy", "sa{ss}", (huge, {"Source": "mongodb://h/"})),
        (MANAGER_PATH, MANAGER_IFACE, "CreatePolicy", "sa{ss}",
         ("big", {"Source": "mongodb://" + "h" * MIB + "/"})),
        (MANAGER_PATH, MANAGER_IFACE, "StartRestore", "ssa{sv}", (huge, "mongodb://h/", {})),
        (MANAGER_PATH, MANAGER_IFACE, "StartRestore", "ssa{sv}",
         ("nightly-x", "mongodb://" + "h" * MIB + "/", {})),
        (MANAGER_PATH, MANAGER_IFACE, "StartRestore", "ssa{sv}",
         ("nightly-x", "mongodb://h/", {"ns_include": ("as", [f"db{i}.*" for i in range(20000)])})),
        (policy, POLICY_IFACE, "Edit", "a{ss}", ({"Schedule": "*-*-* " + "0" * MIB},)),
        (policy, POLICY_IFACE, "Edit", "a{ss}", ({f"Key{i}": "x" for i in range(5000)},)),
        (policy, POLICY_IFACE, "GetLog", "su", ("garbage-cursor" * 1000, 2**32 - 1)),
    ]
    for path, iface, method, sig, body in cases:
        t0 = time.monotonic()
        kind, name, text = bus.call(path, iface, method, sig, body)
        took = time.monotonic() - t0
        assert kind == "error", (method, kind, name)
        assert name.startswith("io.mongosnap1.Error."), (method, name, text[:200])
        # The message says what is wrong without echoing a megabyte back.
        assert 0 < len(text) < 4096, (method, len(text))
        assert took < 10, (method, took)
    assert alive(bus)
    # Nothing was created by the refused CreatePolicy calls.
    assert sorted(p.name for p in agent.policy_dir.iterdir()) == ["nightly.conf"]


@pytest.mark.parametrize("name", ["../../escape", "a/b", ".hidden", "x\ny", "x\ty", "ünïcødé",
                                  "-leading-dash", "a" * 65, "", " ", "nightly\x7f"])
def test_path_like_and_control_character_names(bus_and_agent, name):
    bus, agent = bus_and_agent
    kind, err, text = bus.call(MANAGER_PATH, MANAGER_IFACE, "CreatePolicy", "sa{ss}",
                               (name, {"Source": "mongodb://h/"}))
    assert kind == "error" and err == "io.mongosnap1.Error.InvalidArgument", (name, kind, err, text)
    assert sorted(p.name for p in agent.policy_dir.iterdir()) == ["nightly.conf"]
    assert not (agent.policy_dir.parent.parent / "escape.conf").exists()
    kind, err, _ = bus.call(MANAGER_PATH, MANAGER_IFACE, "ListSnapshots", "s", (name,))
    if name:  # "" is "every policy"
        assert kind == "error" and err in ("io.mongosnap1.Error.InvalidArgument",
                                           "io.mongosnap1.Error.NoSuchPolicy"), (name, err)
    kind, err, _ = bus.call(MANAGER_PATH, MANAGER_IFACE, "StartRestore", "ssa{sv}",
                            (name, "mongodb://h/", {}))
    assert kind == "error" and err.startswith("io.mongosnap1.Error."), (name, err)
    assert alive(bus)


def test_edit_values_cannot_inject_lines(bus_and_agent):
    bus, agent = bus_and_agent
    path = agent.policy_path("nightly")
    before = (agent.policy_dir / "nightly.conf").read_text()
    for key, value in [("Schedule", "daily\n[Encryption]\nKey=stolen"),
                       ("Store", "/tmp/x\nSource=mongodb://evil/"),
                       ("Credential", "cred\rname"), ("Policy.Schedule\n[Retention]", "daily"),
                       ("IncludeNamespaces", "db.*\nExcludeNamespaces=*")]:
        kind, err, text = bus.call(path, POLICY_IFACE, "Edit", "a{ss}", ({key: value},))
        assert kind == "error" and err == "io.mongosnap1.Error.InvalidArgument", (key, err, text)
    assert (agent.policy_dir / "nightly.conf").read_text() == before
    assert alive(bus)


def test_a_bounded_flood_of_calls_is_answered(bus_and_agent):
    bus, agent = bus_and_agent
    # Pipelined in windows of FLOOD_WINDOW calls: the bus daemon itself refuses more pending
    # replies per connection than its limit (LimitsExceeded), which is not the agent's doing.
    conn = bus.conn
    addr = DBusAddress(MANAGER_PATH, bus_name=BUS_NAME, interface=MANAGER_IFACE)
    t0 = time.monotonic()
    replies = {}
    for start in range(0, FLOOD_CALLS, FLOOD_WINDOW):
        for i in range(start, min(start + FLOOD_WINDOW, FLOOD_CALLS)):
            msg = new_method_call(addr, "ListSnapshots", "s", ("nightly" if i % 2 else "nosuch",))
            conn.send(msg)
        while len(replies) < min(start + FLOOD_WINDOW, FLOOD_CALLS):
            m = conn.receive(timeout=REPLY_TIMEOUT)
            rs = m.header.fields.get(5)  # REPLY_SERIAL
            if rs is not None:
                replies[rs] = (m.header.message_type, m.header.fields.get(4))
    took = time.monotonic() - t0
    assert len(replies) == FLOOD_CALLS
    errors = [name for t, name in replies.values() if t == MessageType.error]
    assert errors == ["io.mongosnap1.Error.NoSuchPolicy"] * (FLOOD_CALLS // 2), set(errors)
    print(f"{FLOOD_CALLS} pipelined calls answered in {took:.2f}s")
    assert alive(bus)
    assert agent.proc.poll() is None
