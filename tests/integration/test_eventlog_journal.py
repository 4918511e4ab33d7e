"""mongosnapd's Event Log in a real journal: the agent runs as a systemd service (Type=notify,
BusName=io.mongosnap1, LoadCredential=) inside a systemd booted in a private namespace
(systemd_boot.py), with FerretDB (SCRAM on) in the same namespace, and the entries are read back
with journalctl, `journalctl -x` (the catalog) and the agent's own GetLog.

What is checked: a completed snapshot logs task-queued, task-started, one namespace-finished per
collection, task-stored and task-completed, in that order, each with the MESSAGE_ID and PRIORITY
src/eventlog/eventlog.h gives its kind and the policy, task and node fields, the completion
entry with the figures; the entries are the unit's (`journalctl -u mongosnapd`); every field a
kind's catalog text names is in its entries, and `journalctl -x` shows the text filled in; a
failed snapshot logs task-failed (PRIORITY=3, MONGOSNAP_ERROR), a stopped one task-stopped; the
password of the policy's credential is in no journal entry at all; STATUS= reaches systemd;
GetLog returns what journalctl shows.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from agent_fixtures import sanitizer_reports
from conftest import BUILD_DIR, REPO_ROOT, TOOLS_BIN
from systemd_boot import BootedSystemd, booted_systemd, start_ferretdb_inside  # noqa: F401

BUS_NAME = "io.mongosnap1"
MANAGER_PATH = "/io/mongosnap1"
MANAGER_IFACE = "io.mongosnap1.Manager"
POLICY_IFACE = "io.mongosnap1.Policy"
SNAPSHOT_IFACE = "io.mongosnap1.Snapshot"

DAEMON = BUILD_DIR / "src" / "daemon" / "mongosnapd"
WORKER = BUILD_DIR / "src" / "worker" / "mongosnap-worker"
EVENTLOG_H = REPO_ROOT / "src" / "eventlog" / "eventlog.h"
CATALOG = REPO_ROOT / "units" / "catalog" / "mongosnap.catalog"

NODE = "ns-node-1"
FERRETDB_PORT = 27017
DB_USER = "backup"
# The password of the credential: random, so a hit in the journal cannot be a coincidence.
DB_PASSWORD = "Pw-" + secrets.token_hex(12)
# What the nightly policy dumps: (database, collection, documents).
DATASET = (("shop", "orders", 240), ("shop", "customers", 35), ("inventory", "items", 7))
TASK_TIMEOUT = 60.0
AGENT_TIMEOUT = 30.0

SYSLOG_PRIORITY = {"EMERG": 0, "ALERT": 1, "CRIT": 2, "ERR": 3, "WARNING": 4, "NOTICE": 5,
                   "INFO": 6, "DEBUG": 7}

BUS_POLICY = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy user="root">
    <allow own="io.mongosnap1"/>
    <allow send_destination="io.mongosnap1"/>
  </policy>
</busconfig>
"""

# Read by dbus when it starts (socket-activated, after boot): see systemd_boot.booted_systemd.
SYSTEMD_BOOT_FILES = {"/etc/dbus-1/system.d/io.mongosnap1.conf": BUS_POLICY}


# ---- what the header and the catalog say ----------------------------------------------------

@dataclass(frozen=True)
class EventKind:
    name: str  # MONGOSNAP_EVENT
    priority: int
    message_id: str  # 32 lowercase hex digits, as journalctl prints MESSAGE_ID


def event_kinds() -> Dict[str, EventKind]:
    """The MS_EVENT_KINDS list of eventlog.h, by event name."""
    text = EVENTLOG_H.read_text().replace("\\\n", " ")
    kinds = {}
    for name, prio, idbytes in re.findall(
            r'X\(\s*\w+\s*,\s*"([a-z-]+)"\s*,\s*MS_LOG_(\w+)\s*,\s*SD_ID128_ARRAY\(([^)]*)\)\s*\)', text):
        hexid = "".join(f"{int(b.strip(), 16):02x}" for b in idbytes.split(","))
        assert len(hexid) == 32, (name, idbytes)
        kinds[name] = EventKind(name, SYSLOG_PRIORITY[prio], hexid)
    assert len(kinds) >= 20, f"parsed only {sorted(kinds)} from {EVENTLOG_H}"
    return kinds


def catalog_entries() -> Dict[str, str]:
    """MESSAGE_ID -> its text (Subject and body) in units/catalog/mongosnap.catalog."""
    entries: Dict[str, str] = {}
    current = None
    for line in CATALOG.read_text().splitlines():
        m = re.match(r"^-- ([0-9a-f]{32})(?: .*)?$", line)
        if m:
            current = m.group(1)
            entries[current] = ""
        elif current is not None:
            entries[current] += line + "\n"
    return entries


KINDS = event_kinds()
KIND_BY_ID = {k.message_id: k for k in KINDS.values()}


# ---- the agent inside the booted systemd ----------------------------------------------------

def unit_text() -> str:
    return (
        "[Unit]\n"
        "Description=mongosnap agent (test build)\n"
        "Requires=dbus.socket\n"
        "After=dbus.socket ferretdb.service\n"
        "\n"
        "[Service]\n"
        "Type=notify\n"
        f"BusName={BUS_NAME}\n"
        f"ExecStart={DAEMON} --config=/etc/mongosnap/mongosnap.conf --worker={WORKER}\n"
        "LoadCredential=mongo-pw:/etc/mongosnap/secrets/mongo-pw\n"
        # The test build has ASan; leaks are the private-bus tests' business.
        "Environment=ASAN_OPTIONS=detect_leaks=0\n"
        "TimeoutStartSec=30\n"
        "TimeoutStopSec=30\n")


AGENT_CONF = (
    "[Agent]\n"
    f"Node={NODE}\n"
    "DefaultStore=/var/lib/mongosnap/store\n"
    "StateDirectory=/var/lib/mongosnap/state\n"
    "PolicyDirectory=/etc/mongosnap/policies.d\n")

INSERT_SCRIPT = """
import json, os, sys, pymongo
# The server checks passwords (so a snapshot that logs in proves the credential reached it).
try:
    pymongo.MongoClient(os.environ["MS_URI"], password="not-" + os.environ["MS_PASSWORD"],
                        serverSelectionTimeoutMS=10000).admin.command("ping")
    sys.exit("FerretDB accepted a wrong password")
except pymongo.errors.OperationFailure:
    pass
client = pymongo.MongoClient(os.environ["MS_URI"], password=os.environ["MS_PASSWORD"],
                             serverSelectionTimeoutMS=10000)
for db, coll, n in json.loads(sys.argv[1]):
    client[db][coll].insert_many([{"_id": i, "n": i, "pad": "x" * 200} for i in range(n)])
print(json.dumps({f"{db}.{c}": client[db][c].count_documents({}) for db, c, _ in json.loads(sys.argv[1])}))
"""


class AgentInside:
    """mongosnapd as mongosnapd.service in the booted systemd; busctl calls inside."""

    def __init__(self, sd: BootedSystemd, uri: str):
        self.sd = sd
        self.uri = uri  # FerretDB, without the password

    def call(self, path: str, iface: str, method: str, signature: str = "", *args) -> list:
        cmd = ["--json=short", "call", BUS_NAME, path, iface, method]
        if signature:
            cmd += [signature, *map(str, args)]
        out = self.sd.busctl(*cmd, timeout=30).stdout
        return json.loads(out)["data"] if out.strip() else []

    def prop(self, path: str, iface: str, name: str):
        return json.loads(self.sd.busctl("--json=short", "get-property", BUS_NAME, path, iface,
                                         name).stdout)["data"]

    def policy_path(self, name: str) -> str:
        return f"{MANAGER_PATH}/policy/{name}"  # names of [a-z] only: no escaping

    def take_snapshot(self, policy: str) -> Tuple[str, str]:
        """TakeSnapshot; returns (object path, snapshot id)."""
        (path,) = self.call(self.policy_path(policy), POLICY_IFACE, "TakeSnapshot")
        return path, self.prop(path, SNAPSHOT_IFACE, "Id")

    def wait_state(self, path: str, states, timeout: float = TASK_TIMEOUT) -> str:
        def state():
            s = self.prop(path, SNAPSHOT_IFACE, "State")
            return s if s in states else None
        return self.sd.wait_for(state, f"{path} State in {states}", timeout=timeout)

    def journal_text(self, lines: int = 80) -> str:
        return self.sd.journalctl("-u", "mongosnapd", "-n", str(lines), check=False).stdout


@pytest.fixture(scope="module")
def agent_inside(booted_systemd: BootedSystemd) -> AgentInside:
    sd = booted_systemd
    for p in (DAEMON, WORKER, TOOLS_BIN / "ferretdb"):
        if not p.is_file():
            pytest.fail(f"not built: {p} (run scripts/check, or set MONGOSNAP_BUILD_DIR / "
                        f"MONGOSNAP_TOOLS_BIN)", pytrace=False)
    uri = start_ferretdb_inside(sd, TOOLS_BIN / "ferretdb", port=FERRETDB_PORT,
                                auth=(DB_USER, DB_PASSWORD))
    counts = json.loads(sd.run_python(INSERT_SCRIPT, json.dumps(DATASET),
                                      env={"MS_URI": uri, "MS_PASSWORD": DB_PASSWORD}).stdout)
    assert counts == {f"{db}.{c}": n for db, c, n in DATASET}, counts

    sd.write_file("/etc/mongosnap/mongosnap.conf", AGENT_CONF)
    sd.write_file("/etc/mongosnap/secrets/mongo-pw", DB_PASSWORD + "\n", mode=0o600)
    policies = {
        "nightly": f"[Policy]\nSource={uri}\nCredential=mongo-pw\n",
        # A worker waiting on a SIGSTOPped server notices Stop only when the driver gives up
        # (serverSelectionTimeoutMS, 30 s by default); 8 s keeps the test short and leaves
        # ample time to call Stop before that.
        "slow": f"[Policy]\nSource={uri}&serverSelectionTimeoutMS=8000&connectTimeoutMS=8000\n"
                "Credential=mongo-pw\n",
        # A closed port of the namespace's own loopback: refused at once.
        "broken": "[Policy]\nSource=mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=500"
                  "&connectTimeoutMS=500\n",
    }
    for name, text in policies.items():
        sd.write_file(f"/etc/mongosnap/policies.d/{name}.conf", text)
    sd.run("mkdir", "-p", "/var/lib/mongosnap/store", "/var/lib/mongosnap/state")
    sd.write_file("/run/systemd/system/mongosnapd.service", unit_text())
    sd.systemctl("daemon-reload")
    cp = sd.systemctl("start", "mongosnapd.service", check=False, timeout=AGENT_TIMEOUT + 10)
    agent = AgentInside(sd, uri)
    assert cp.returncode == 0, (f"mongosnapd.service did not start: {cp.stderr}\n"
                                f"{agent.journal_text()}")
    return agent


@pytest.fixture(scope="module")
def sanitizer_check(agent_inside: AgentInside):
    """After the module: no ASan/UBSan report from the daemon's sources in its unit's journal."""
    yield
    log = agent_inside.sd.journalctl("-u", "mongosnapd", "-o", "cat", check=False).stdout
    reports = sanitizer_reports(log)
    assert not reports, "\n\n".join(reports)


@dataclass
class Task:
    policy: str
    path: str
    id: str
    state: str
    started: float  # time.time() before TakeSnapshot
    finished: float


@pytest.fixture(scope="module")
def nightly(agent_inside: AgentInside, sanitizer_check) -> Task:
    t0 = time.time()
    path, sid = agent_inside.take_snapshot("nightly")
    state = agent_inside.wait_state(path, ("completed", "failed", "stopped", "interrupted"))
    assert state == "completed", (f"{sid}: {state}: {agent_inside.prop(path, SNAPSHOT_IFACE, 'Error')}"
                                  f"\n{agent_inside.journal_text()}")
    return Task("nightly", path, sid, state, t0, time.time())


@pytest.fixture(scope="module")
def broken(agent_inside: AgentInside, sanitizer_check) -> Task:
    t0 = time.time()
    path, sid = agent_inside.take_snapshot("broken")
    state = agent_inside.wait_state(path, ("completed", "failed", "stopped", "interrupted"))
    assert state == "failed", f"{sid}: {state}\n{agent_inside.journal_text()}"
    return Task("broken", path, sid, state, t0, time.time())


@pytest.fixture(scope="module")
def slow_stopped(agent_inside: AgentInside, sanitizer_check) -> Tuple[Task, List[str]]:
    """A snapshot of policy `slow` stopped with Policy.Stop while its worker waits on a
    SIGSTOPped FerretDB. Also returns the StatusText values seen while it ran."""
    sd = agent_inside.sd
    policy = agent_inside.policy_path("slow")
    sd.systemctl("kill", "--signal=SIGSTOP", "ferretdb.service")
    try:
        t0 = time.time()
        path, sid = agent_inside.take_snapshot("slow")
        agent_inside.wait_state(path, ("running",), timeout=20)
        status = sd.wait_for(
            lambda: (lambda s: s if "slow: snapshot" in s else None)(
                sd.unit_property("mongosnapd", "StatusText")),
            "STATUS= naming the running snapshot", timeout=10)
        exposed = secrets_in_processes(sd)
        agent_inside.call(policy, POLICY_IFACE, "Stop")
        state = agent_inside.wait_state(path, ("completed", "failed", "stopped", "interrupted"),
                                        timeout=45)
    finally:
        sd.systemctl("kill", "--signal=SIGCONT", "ferretdb.service")
    agent_inside.call(policy, POLICY_IFACE, "Start")
    assert state == "stopped", f"{sid}: {state}\n{agent_inside.journal_text()}"
    assert not exposed, f"the password is visible in /proc while a worker runs: {exposed}"
    return Task("slow", path, sid, state, t0, time.time()), [status]


PROC_SCAN = """
import os, sys
secret = os.environ["MS_PASSWORD"].encode()
agent = set(open("/sys/fs/cgroup/system.slice/mongosnapd.service/cgroup.procs").read().split())
assert len(agent) >= 2, f"expected the agent and a worker, found {agent}"
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    # Every command line; the environment of the agent and its workers (FerretDB's own
    # environment holds its setup password, by design of this test).
    for what in ("cmdline",) + (("environ",) if pid in agent else ()):
        try:
            data = open(f"/proc/{pid}/{what}", "rb").read()
        except OSError:
            continue
        if secret in data:
            print(pid, what, data.replace(b"\\0", b" ")[:200])
"""


def secrets_in_processes(sd: BootedSystemd) -> str:
    """Processes inside whose command line (any) or environment (mongosnapd's unit) holds
    the password; "" when none."""
    return sd.run_python(PROC_SCAN, env={"MS_PASSWORD": DB_PASSWORD}).stdout.strip()


def task_entries(sd: BootedSystemd, task: Task) -> List[dict]:
    return sd.journal_entries(f"MONGOSNAP_POLICY={task.policy}", f"MONGOSNAP_TASK={task.id}")


def events(entries: List[dict]) -> List[str]:
    return [e.get("MONGOSNAP_EVENT", "?") for e in entries]


def check_entry_identity(e: dict, task: Task) -> None:
    """MESSAGE_ID and PRIORITY of the entry's kind; policy, task and node fields."""
    kind = KINDS.get(e.get("MONGOSNAP_EVENT", ""))
    assert kind is not None, f"entry without a known MONGOSNAP_EVENT: {e}"
    assert e.get("MESSAGE_ID") == kind.message_id, (kind.name, e)
    assert e.get("PRIORITY") == str(kind.priority), (kind.name, e.get("PRIORITY"), e)
    assert e.get("MONGOSNAP_POLICY") == task.policy, e
    assert e.get("MONGOSNAP_TASK") == task.id, e
    assert e.get("MONGOSNAP_NODE") == NODE, (kind.name, e)
    assert e.get("MESSAGE"), e


# ---- the namespace itself ---------------------------------------------------------------------

def test_booted_systemd_is_private(booted_systemd: BootedSystemd, tmp_path: Path):
    sd = booted_systemd
    assert sd.systemctl("is-system-running").stdout.strip() == "running"
    assert sd.run("cat", "/proc/1/comm").stdout.strip() == "systemd"
    for unit in ("systemd-journald.service", "dbus.socket"):
        assert sd.systemctl("is-active", unit).stdout.strip() == "active", unit
    # sysusers and tmpfiles ran inside: the host's passwd and /tmp must not have seen them.
    assert sd.systemctl("show", "-p", "ActiveState", "--value",
                        "systemd-sysusers.service").stdout.strip() == "active"
    assert sd.host_changes() == []
    host_passwd = Path("/etc/passwd").read_bytes()
    probe = f"mongosnap-probe-{secrets.token_hex(4)}"
    host_keep = tmp_path / "keep"  # a file in the host's /tmp that tmpfiles inside must not see
    host_keep.write_text("host")
    sd.write_file(f"/tmp/{probe}", "inside")
    sd.write_file(f"/etc/{probe}", "inside")
    sd.run("sh", "-c", f"echo '{probe}:x:4242:4242::/:/bin/false' >> /etc/passwd")
    assert sd.read_file(f"/etc/{probe}") == "inside"
    assert probe in sd.read_file("/etc/passwd")
    assert not Path(f"/tmp/{probe}").exists() and not Path(f"/etc/{probe}").exists()
    assert Path("/etc/passwd").read_bytes() == host_passwd
    assert host_keep.read_text() == "host"
    assert not sd.exists(str(host_keep)), "the host's /tmp shows inside"
    # Its own network: only loopback, and up.
    links = sd.run("ip", "-o", "link").stdout
    assert re.findall(r"^\d+: (\S+?):", links, re.M) == ["lo"], links
    assert "UP" in links
    # Its own cgroup: the host sees it as a child of the test's cgroup.
    assert sd.cgroup is not None and (sd.cgroup / "init.scope").is_dir()
    assert sd.host_changes() == []


# ---- a completed snapshot ---------------------------------------------------------------------

def test_completed_snapshot_entries(agent_inside: AgentInside, nightly: Task):
    sd = agent_inside.sd
    entries = task_entries(sd, nightly)
    names = events(entries)
    for e in entries:
        check_entry_identity(e, nightly)

    expected_ns = {f"{db}.{c}": n for db, c, n in DATASET}
    for kind in ("task-queued", "task-started", "task-stored", "task-completed"):
        assert names.count(kind) == 1, (kind, names)
    assert names.count("namespace-finished") == len(expected_ns), names
    # No oplog on this FerretDB (no local.oplog.rs): no oplog-captured, no failure kinds.
    assert set(names) <= {"task-queued", "task-started", "namespace-finished", "task-stored",
                          "task-completed"}, names
    pos = {k: names.index(k) for k in ("task-queued", "task-started", "task-stored", "task-completed")}
    ns_pos = [i for i, n in enumerate(names) if n == "namespace-finished"]
    assert pos["task-queued"] < pos["task-started"] < min(ns_pos), names
    assert max(ns_pos) < pos["task-stored"] < pos["task-completed"], names
    # Journal order is also time order.
    times = [int(e["__REALTIME_TIMESTAMP"]) for e in entries]
    assert times == sorted(times)

    finished = {e["MONGOSNAP_NAMESPACE"]: e for e in entries if e["MONGOSNAP_EVENT"] == "namespace-finished"}
    assert set(finished) == set(expected_ns), finished.keys()
    for ns, e in finished.items():
        assert int(e["MONGOSNAP_ITEMS"]) == expected_ns[ns], (ns, e)
        assert int(e.get("MONGOSNAP_BYTES", "0")) > 0, (ns, e)

    stored = entries[pos["task-stored"]]
    assert int(stored["MONGOSNAP_BYTES"]) > 0, stored

    done = entries[pos["task-completed"]]
    assert int(done["MONGOSNAP_ITEMS"]) == sum(expected_ns.values()), done
    assert int(done["MONGOSNAP_BYTES"]) > 0, done
    elapsed = int(done["MONGOSNAP_ELAPSED_USEC"])
    assert 0 < elapsed <= (nightly.finished - nightly.started) * 1e6 + 1e6, (elapsed, done)
    assert "MONGOSNAP_ERROR" not in done, done
    # The bus agrees with the journal.
    assert agent_inside.prop(nightly.path, SNAPSHOT_IFACE, "Items") == sum(expected_ns.values())
    assert agent_inside.prop(nightly.path, SNAPSHOT_IFACE, "TaskLog") == f"MONGOSNAP_TASK={nightly.id}"


def test_entries_belong_to_the_unit(agent_inside: AgentInside, nightly: Task):
    sd = agent_inside.sd
    all_policy = sd.journal_entries("MONGOSNAP_POLICY=nightly")
    by_unit = sd.journal_entries("MONGOSNAP_POLICY=nightly", extra=("-u", "mongosnapd"))
    assert by_unit, "journalctl -u mongosnapd MONGOSNAP_POLICY=nightly shows nothing"
    assert [e["__CURSOR"] for e in by_unit] == [e["__CURSOR"] for e in all_policy]
    for e in by_unit:
        assert e.get("_SYSTEMD_UNIT") == "mongosnapd.service", e
    # Also the plain text form an operator uses.
    text = sd.journalctl("-u", "mongosnapd", "MONGOSNAP_POLICY=nightly").stdout
    assert nightly.id in text, text


def test_catalog_explains_every_entry(agent_inside: AgentInside, nightly: Task, broken: Task,
                                      slow_stopped):
    sd = agent_inside.sd
    catalog = catalog_entries()
    assert set(catalog) == {k.message_id for k in KINDS.values()}, \
        "units/catalog/mongosnap.catalog and eventlog.h list different ids"
    sd.copy_in(CATALOG, "/usr/lib/systemd/catalog/mongosnap.catalog", mode=0o644)
    sd.journalctl("--update-catalog")
    listed = sd.journalctl("--list-catalog").stdout
    for k in KINDS.values():
        assert k.message_id in listed, (k.name, "not in journalctl --list-catalog")

    def flat(text: str) -> str:
        return " ".join(text.replace("\u2591", " ").split())

    # Task and policy events of a completed, a failed and a stopped snapshot.
    seen = set()
    for policy in (nightly.policy, broken.policy, slow_stopped[0].policy):
        entries = sd.journal_entries(f"MONGOSNAP_POLICY={policy}")
        # Every field a kind's text names must be in its entries, or -x shows a hole.
        for e in entries:
            seen.add(e["MONGOSNAP_EVENT"])
            needed = set(re.findall(r"@([A-Z0-9_]+)@", catalog[e["MESSAGE_ID"]]))
            missing = sorted(f for f in needed if not e.get(f))
            assert not missing, f"{e['MONGOSNAP_EVENT']} entry lacks {missing} its catalog text uses: {e}"
        # journalctl -x shows each entry's catalog text, with its fields filled in.
        shown = flat(sd.journalctl("-x", f"MONGOSNAP_POLICY={policy}").stdout)
        for e in entries:
            filled = re.sub(r"@([A-Z0-9_]+)@", lambda m: e.get(m.group(1), m.group(0)),
                            catalog[e["MESSAGE_ID"]])
            assert flat(filled) in shown, (f"journalctl -x does not show the catalog text of "
                                           f"{e['MONGOSNAP_EVENT']}:\n{filled}\n--- shown:\n{shown}")
        assert "@MONGOSNAP_" not in shown, shown
    assert {"task-completed", "task-failed", "task-stopped", "policy-stopped"} <= seen, seen


# ---- failed and stopped snapshots -------------------------------------------------------------

def test_failed_snapshot_entry(agent_inside: AgentInside, broken: Task):
    entries = task_entries(agent_inside.sd, broken)
    for e in entries:
        check_entry_identity(e, broken)
    names = events(entries)
    assert names[0] == "task-queued" and names[-1] == "task-failed", names
    assert names.count("task-failed") == 1 and "task-completed" not in names, names
    failed = entries[-1]
    assert failed["PRIORITY"] == "3", failed
    assert failed["MESSAGE_ID"] == KINDS["task-failed"].message_id
    error = failed.get("MONGOSNAP_ERROR", "")
    assert error, failed
    bus_error = agent_inside.prop(broken.path, SNAPSHOT_IFACE, "Error")
    assert bus_error and (bus_error in error or error in bus_error), (bus_error, error)
    # Filtering by priority, as monitoring does, finds it.
    err = agent_inside.sd.journal_entries(f"MONGOSNAP_TASK={broken.id}", extra=("-p", "err"))
    assert [e["MONGOSNAP_EVENT"] for e in err] == ["task-failed"], err


def test_stopped_snapshot_entry(agent_inside: AgentInside, slow_stopped):
    stopped, _ = slow_stopped
    sd = agent_inside.sd
    entries = task_entries(sd, stopped)
    for e in entries:
        check_entry_identity(e, stopped)
    names = events(entries)
    assert names[0] == "task-queued" and "task-started" in names, names
    assert names[-1] == "task-stopped" and names.count("task-stopped") == 1, names
    assert not {"task-failed", "task-completed", "task-interrupted"} & set(names), names
    assert entries[-1]["PRIORITY"] == str(KINDS["task-stopped"].priority)
    # The policy's Stop and Start are logged too, as policy events (no task).
    policy_events = [e for e in sd.journal_entries("MONGOSNAP_POLICY=slow")
                     if e["MONGOSNAP_EVENT"].startswith("policy-")]
    assert [e["MONGOSNAP_EVENT"] for e in policy_events] == ["policy-stopped", "policy-started"], \
        policy_events
    for e in policy_events:
        assert e["MESSAGE_ID"] == KINDS[e["MONGOSNAP_EVENT"]].message_id, e


# ---- secrets, sd_notify, GetLog ---------------------------------------------------------------

def test_no_password_in_the_journal(agent_inside: AgentInside, nightly: Task, broken: Task,
                                    slow_stopped):
    sd = agent_inside.sd
    # The credential did reach the worker: the nightly snapshot logged in with it (the server
    # checks passwords), so the password was in the agent's hands while these entries were made.
    assert nightly.state == "completed"
    ours = sd.journal_entries("MONGOSNAP_POLICY=nightly") + sd.journal_entries("MONGOSNAP_POLICY=slow")
    assert len(ours) >= 10, ours
    for e in ours:
        assert DB_PASSWORD not in json.dumps(e), e
    # Every entry of the whole journal, every field (the daemon's and workers' stderr too).
    whole = sd.journalctl("-o", "json", "--all").stdout
    assert whole.count("\n") > 50, "the journal looks empty"
    assert DB_PASSWORD not in whole, [line for line in whole.splitlines() if DB_PASSWORD in line]
    # Nor in the unit's properties or the bus's view of the policy.
    assert DB_PASSWORD not in sd.systemctl("show", "mongosnapd").stdout
    assert DB_PASSWORD not in sd.busctl("introspect", BUS_NAME, agent_inside.policy_path("nightly")).stdout


def test_status_text(agent_inside: AgentInside, slow_stopped):
    sd = agent_inside.sd
    _, statuses = slow_stopped
    assert any(re.match(r"^3 policies; slow: snapshot", s) for s in statuses), statuses
    idle = sd.wait_for(lambda: (lambda s: s if s == "3 policies, idle" else None)(
        sd.unit_property("mongosnapd", "StatusText")), "StatusText of an idle agent", timeout=10)
    assert idle == "3 policies, idle"
    assert sd.unit_property("mongosnapd", "ActiveState") == "active"
    assert sd.unit_property("mongosnapd", "Type") == "notify"


def _getlog_fields(reply: list) -> List[Tuple[str, int, Dict[str, str]]]:
    (rows,) = reply
    return [(cursor, usec, fields) for cursor, usec, fields in rows]


def test_getlog_matches_journalctl(agent_inside: AgentInside, nightly: Task, broken: Task):
    sd = agent_inside.sd
    policy = agent_inside.policy_path("nightly")
    introspection = sd.busctl("introspect", BUS_NAME, policy).stdout
    if not re.search(r"^\.GetLog\s", introspection, re.M):
        pytest.skip("GetLog not in mongosnapd yet")
    journal = sd.journal_entries("MONGOSNAP_POLICY=nightly")
    assert journal

    rows = _getlog_fields(agent_inside.call(policy, POLICY_IFACE, "GetLog", "su", "", 0))
    assert [f.get("MESSAGE_ID") for _, _, f in rows] == [e["MESSAGE_ID"] for e in journal]
    assert [c for c, _, _ in rows] == [e["__CURSOR"] for e in journal]
    assert [u for _, u, _ in rows] == [int(e["__REALTIME_TIMESTAMP"]) for e in journal]
    for (_, _, f), e in zip(rows, journal):
        for key, value in f.items():
            assert e.get(key) == value, (key, f, e)
        for key in ("MESSAGE", "PRIORITY", "MONGOSNAP_EVENT", "MONGOSNAP_TASK", "MONGOSNAP_NODE",
                    "MONGOSNAP_ITEMS", "MONGOSNAP_BYTES", "MONGOSNAP_ELAPSED_USEC",
                    "MONGOSNAP_NAMESPACE", "MONGOSNAP_ERROR"):
            assert f.get(key) == e.get(key), (key, f, e)

    # The Manager's GetLog with the policy's match gives the same; a task's match only its task.
    mrows = _getlog_fields(agent_inside.call(MANAGER_PATH, MANAGER_IFACE, "GetLog", "ssu",
                                             "MONGOSNAP_POLICY=nightly", "", 0))
    assert [c for c, _, _ in mrows] == [c for c, _, _ in rows]
    trows = _getlog_fields(agent_inside.call(MANAGER_PATH, MANAGER_IFACE, "GetLog", "ssu",
                                             f"MONGOSNAP_TASK={broken.id}", "", 0))
    assert [f["MESSAGE_ID"] for _, _, f in trows] == \
        [e["MESSAGE_ID"] for e in task_entries(sd, broken)]

    # Newest N, and following from a cursor.
    last2 = _getlog_fields(agent_inside.call(policy, POLICY_IFACE, "GetLog", "su", "", 2))
    assert [c for c, _, _ in last2] == [e["__CURSOR"] for e in journal[-2:]]
    after = _getlog_fields(agent_inside.call(policy, POLICY_IFACE, "GetLog", "su",
                                             journal[1]["__CURSOR"], 0))
    assert [c for c, _, _ in after] == [e["__CURSOR"] for e in journal[2:]]
