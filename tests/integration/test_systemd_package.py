"""The Debian package in a real systemd: scripts/build-deb builds the .deb once per session
from this working tree, and it is installed with dpkg -i into a systemd booted in private
namespaces (systemd_boot.py), whose overlay root shows the host's files and dpkg database, so
the runtime libraries are there as installed packages.

What is checked, in order (the tests of this module share one boot and build on each other):
the package installs, creates the groups and the directories, enables and starts the agent
(READY, StatusText), loads the bus policy and the journal catalog; `systemd-analyze verify`
finds nothing wrong with the units, and `systemd-analyze security` rates mongosnapd.service at
2.0 or better; a policy dropped into /etc/mongosnap/policies.d with a Schedule= a few seconds
ahead and `systemctl reload mongosnapd` give a timer in `systemctl list-timers` whose
NextElapseUSecRealtime is the policy's NextRun, which fires, and the snapshot unit ends
successful with a completed snapshot; the Event Log is in the journal with the catalog's text;
Edit over D-Bus changes the timer's OnCalendar=, Stop and Start of the policy stop and start
it; root may call everything, a member of mongosnap may take a snapshot, a member of
mongosnap-readonly may list but not take one, anyone else may do neither; `systemctl stop
mongosnapd` during a snapshot ends it cleanly and the agent, started again by a D-Bus call
(activation), lists it as interrupted; a SIGSTOPped agent is killed and restarted by the
watchdog; the snapshot unit of a policy whose server is unreachable fails, and its journal says
why. Nothing of it reaches the host.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from conftest import REPO_ROOT, TOOLS_BIN
from systemd_boot import BootedSystemd, booted_systemd, start_ferretdb_inside  # noqa: F401

BUS_NAME = "io.mongosnap1"
MANAGER_PATH = "/io/mongosnap1"
MANAGER_IFACE = "io.mongosnap1.Manager"
POLICY_IFACE = "io.mongosnap1.Policy"
SNAPSHOT_IFACE = "io.mongosnap1.Snapshot"
SYSTEMD = ("org.freedesktop.systemd1", "/org/freedesktop/systemd1",
           "org.freedesktop.systemd1.Manager")

BUILD_TIMEOUT = 900.0
INSTALL_TIMEOUT = 180.0
TASK_TIMEOUT = 60.0
DB_USER = "backup"
DB_PASSWORD = "Pw-" + secrets.token_hex(12)
SECRET_PATH = "/etc/mongosnap/secrets/mongo-pw"
NOBODY = 65534
# How far ahead the first schedule is set: the reload and the timer's start take well under.
SCHEDULE_AHEAD_S = 8
EXPOSURE_MAX = 2.0
# systemd-analyze security --threshold= counts in tenths of the exposure it prints.
THRESHOLD = int(EXPOSURE_MAX * 10)
# Operators of the package's groups, created inside (useradd -G ...).
OPERATOR = "msop"
READER = "msread"

# The documented way to give the agent its credentials: a drop-in, in place before the
# package starts the service.
CREDENTIALS_DROPIN = f"""[Service]
LoadCredential=mongo-pw:{SECRET_PATH}
"""


# ---- the package ------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def deb_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scripts/build-deb, once per session; the .deb stays under pytest's temporary directory.
    MONGOSNAP_DEB=/path/to/mongosnap_*.deb uses a package built before instead."""
    prebuilt = os.environ.get("MONGOSNAP_DEB")
    if prebuilt:
        if not Path(prebuilt).is_file():
            pytest.fail(f"MONGOSNAP_DEB={prebuilt}: no such file", pytrace=False)
        return Path(prebuilt)
    out = tmp_path_factory.mktemp("deb")
    try:
        cp = subprocess.run([str(REPO_ROOT / "scripts" / "build-deb"), str(out)],
                            capture_output=True, text=True, timeout=BUILD_TIMEOUT,
                            stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"scripts/build-deb took more than {BUILD_TIMEOUT}s:\n{(e.stderr or '')[-4000:]}",
                    pytrace=False)
    if cp.returncode != 0:
        pytest.fail(f"scripts/build-deb failed ({cp.returncode}):\n{cp.stderr[-6000:]}",
                    pytrace=False)
    debs = [Path(line) for line in cp.stdout.split()
            if re.search(r"/mongosnap_[^/]*\.deb$", line)]
    assert len(debs) == 1 and debs[0].is_file(), cp.stdout
    return debs[0]


class Installed:
    """The package installed in the booted systemd, FerretDB (SCRAM on) beside it."""

    def __init__(self, sd: BootedSystemd, uri: str, dpkg_output: str):
        self.sd = sd
        self.uri = uri
        self.dpkg_output = dpkg_output

    # bus calls as root (busctl inside)
    def call(self, path: str, iface: str, method: str, signature: str = "", *args,
             dest: str = BUS_NAME, user: Optional[List[str]] = None, check: bool = True):
        cmd = [*(user or []), "busctl", "--no-pager", "--json=short", "call", dest, path, iface,
               method]
        if signature:
            cmd += [signature, *map(str, args)]
        cp = self.sd.run(*cmd, timeout=30, check=check)
        if not check:
            return cp
        return json.loads(cp.stdout)["data"] if cp.stdout.strip() else []

    def prop(self, path: str, iface: str, name: str, dest: str = BUS_NAME):
        return json.loads(self.sd.busctl("--json=short", "get-property", dest, path, iface,
                                         name).stdout)["data"]

    def policy_path(self, name: str) -> str:
        return f"{MANAGER_PATH}/policy/{name}"  # names of [a-z] only: no escaping

    def snapshots(self, policy: str) -> List[list]:
        (rows,) = self.call(MANAGER_PATH, MANAGER_IFACE, "ListSnapshots", "s", policy)
        return rows

    def wait_state(self, path: str, states, timeout: float = TASK_TIMEOUT) -> str:
        def state():
            s = self.prop(path, SNAPSHOT_IFACE, "State")
            return s if s in states else None
        return self.sd.wait_for(state, f"{path} State in {states}", timeout=timeout)

    def timer_path(self, unit: str) -> str:
        (path,) = self.call(SYSTEMD[1], SYSTEMD[2], "GetUnit", "s", unit, dest=SYSTEMD[0])
        return path

    def timer_next_elapse(self, unit: str) -> int:
        return self.prop(self.timer_path(unit), "org.freedesktop.systemd1.Timer",
                         "NextElapseUSecRealtime", dest=SYSTEMD[0])

    def write_policy(self, name: str, text: str) -> None:
        self.sd.write_file(f"/etc/mongosnap/policies.d/{name}.conf", text, mode=0o640)

    def reload(self) -> None:
        self.sd.systemctl("reload", "mongosnapd.service", timeout=60)

    def journal(self, unit: str = "mongosnapd", lines: int = 60) -> str:
        return self.sd.journalctl("-u", unit, "-n", str(lines), check=False).stdout

    def dropin(self, policy: str) -> str:
        return f"/run/systemd/system/mongosnap-snapshot@{policy}.timer.d/50-mongosnap-policy.conf"


@pytest.fixture(scope="module")
def installed(booted_systemd: BootedSystemd, deb_package: Path) -> Installed:
    sd = booted_systemd
    ferretdb = TOOLS_BIN / "ferretdb"
    if not ferretdb.is_file():
        pytest.fail(f"not built: {ferretdb} (run scripts/check, or set MONGOSNAP_TOOLS_BIN)",
                    pytrace=False)
    uri = start_ferretdb_inside(sd, ferretdb, auth=(DB_USER, DB_PASSWORD))
    sd.run_python(
        "import os, pymongo\n"
        "c = pymongo.MongoClient(os.environ['MS_URI'], password=os.environ['MS_PASSWORD'],"
        " serverSelectionTimeoutMS=10000)\n"
        "c.shop.orders.insert_many([{'_id': i, 'pad': 'x' * 100} for i in range(200)])\n"
        "c.shop.customers.insert_many([{'_id': i} for i in range(20)])\n",
        env={"MS_URI": uri, "MS_PASSWORD": DB_PASSWORD})

    sd.write_file(SECRET_PATH, DB_PASSWORD + "\n", mode=0o600)
    sd.write_file("/etc/systemd/system/mongosnapd.service.d/credentials.conf", CREDENTIALS_DROPIN)
    # man-db's trigger would rebuild the whole man index inside (slow, and irrelevant here).
    sd.run("rm", "-f", "/var/lib/man-db/auto-update")
    # A container image's policy-rc.d (Docker's: "exit 101", no service starts during docker
    # build) would keep dpkg from starting the service in this booted systemd, which is a
    # real init: removed inside only (the overlay), as on a machine.
    sd.run("rm", "-f", "/usr/sbin/policy-rc.d")
    sd.copy_in(deb_package, f"/tmp/{deb_package.name}", mode=0o644)
    cp = sd.run("dpkg", "-i", f"/tmp/{deb_package.name}", check=False, timeout=INSTALL_TIMEOUT,
                env={"DEBIAN_FRONTEND": "noninteractive"})
    assert cp.returncode == 0, (f"dpkg -i failed ({cp.returncode}):\n{cp.stdout}\n{cp.stderr}\n"
                                f"{sd.journalctl('-n', '80', check=False).stdout}")
    return Installed(sd, uri, cp.stdout + cp.stderr)


def wait_unit_run_ended(sd: BootedSystemd, unit: str, after_usec: int, timeout: float) -> Dict[str, str]:
    """Wait until unit's main process exited after the monotonic time after_usec; its
    Result, ExecMainStatus, ActiveState."""
    props = ("Result", "ExecMainStatus", "ActiveState", "ExecMainExitTimestampMonotonic")

    def ended():
        out = sd.systemctl("show", unit, *[f"-p{p}" for p in props]).stdout
        values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        exited = int(values.get("ExecMainExitTimestampMonotonic") or 0)
        if exited > after_usec and values.get("ActiveState") in ("inactive", "failed"):
            return values
        return None
    return sd.wait_for(ended, f"{unit} to run and end", timeout=timeout, interval=0.25)


def monotonic_usec(sd: BootedSystemd) -> int:
    # CLOCK_MONOTONIC is the same inside and outside the namespace.
    return int(time.monotonic() * 1e6)


# ---- install ----------------------------------------------------------------------------------

def test_package_installs(installed: Installed):
    sd = installed.sd
    status = sd.run("dpkg-query", "-W", "-f=${Status} ${Version}", "mongosnap").stdout
    assert status.startswith("install ok installed"), status
    for group in ("mongosnap", "mongosnap-readonly"):
        assert sd.run("getent", "group", group, check=False).returncode == 0, \
            f"group {group} missing after install"
    # tmpfiles.d: modes and owners.
    assert sd.run("stat", "-c", "%a %U %G", "/etc/mongosnap/policies.d").stdout.split() == \
        ["750", "root", "mongosnap"]
    assert sd.run("stat", "-c", "%a %U", "/var/lib/mongosnap").stdout.split() == ["700", "root"]
    for path in ("/usr/sbin/mongosnapd", "/usr/bin/mongosnapctl",
                 "/usr/share/dbus-1/system.d/io.mongosnap1.conf",
                 "/usr/share/dbus-1/system-services/io.mongosnap1.service",
                 "/usr/share/bash-completion/completions/mongosnapctl",
                 "/usr/share/man/man8/mongosnapd.8.gz", "/etc/mongosnap/mongosnap.conf"):
        assert sd.exists(path), path
    # Enabled and running, READY reached (Type=notify), STATUS= shown.
    assert sd.systemctl("is-enabled", "mongosnapd.service").stdout.strip() == "enabled"
    assert sd.unit_property("mongosnapd.service", "ActiveState") == "active", installed.journal()
    assert sd.unit_property("mongosnapd.service", "Type") == "notify"
    assert sd.unit_property("mongosnapd.service", "StatusText") == "0 policies, idle"
    assert sd.unit_property("mongosnapd.service", "NotifyAccess") == "main"
    # The credential drop-in was in effect when the package started it.
    assert "/etc/systemd/system/mongosnapd.service.d/credentials.conf" in \
        sd.unit_property("mongosnapd.service", "DropInPaths")
    # The bus knows the name; the catalog was indexed by systemd's trigger.
    assert installed.call(MANAGER_PATH, MANAGER_IFACE, "ListPolicies") == [[]]
    catalog = sd.journalctl("--list-catalog").stdout
    assert "e13db7359a0b44c1ac241ab8f898f52b" in catalog, "mongosnap's catalog not indexed"


def test_units_verify(installed: Installed):
    sd = installed.sd
    cp = sd.run("systemd-analyze", "verify", "mongosnapd.service", "mongosnap-snapshot@.service",
                check=False)
    assert cp.returncode == 0 and not cp.stderr.strip() and not cp.stdout.strip(), \
        (cp.returncode, cp.stdout, cp.stderr)
    # The timer template has no trigger of its own, by design (the agent writes each policy's
    # OnCalendar= into a drop-in): alone, it is refused for exactly that and nothing else. The
    # instance of a policy, drop-in included, is verified in test_timer_fires_snapshot.
    cp = sd.run("systemd-analyze", "verify", "mongosnap-snapshot@.timer", check=False)
    problems = [line for line in (cp.stdout + cp.stderr).splitlines() if line.strip()]
    assert problems == ["mongosnap-snapshot@i.timer: Timer unit lacks value setting. Refusing.",
                        "Unit mongosnap-snapshot@i.timer has a bad unit file setting."], problems


def test_security_exposure(installed: Installed):
    sd = installed.sd
    cp = sd.run("systemd-analyze", "security", "--no-pager", f"--threshold={THRESHOLD}",
                "mongosnapd.service", check=False)
    m = re.search(r"Overall exposure level for mongosnapd\.service: (\d+\.\d+)", cp.stdout)
    assert m, cp.stdout + cp.stderr
    exposure = float(m.group(1))
    print(f"systemd-analyze security mongosnapd.service: exposure {exposure}")
    assert cp.returncode == 0 and exposure <= EXPOSURE_MAX, cp.stdout
    # The snapshot service is a bus client only, and rated so.
    cp = sd.run("systemd-analyze", "security", "--no-pager", f"--threshold={THRESHOLD}",
                "mongosnap-snapshot@x.service", check=False)
    assert cp.returncode == 0, cp.stdout


# ---- the timers -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fired(installed: Installed) -> Dict[str, object]:
    """Policy nightly scheduled SCHEDULE_AHEAD_S seconds ahead, loaded with systemctl reload;
    waits until its timer fired and the snapshot unit ended."""
    sd = installed.sd
    now = int(sd.run("date", "+%s").stdout)
    at = now + SCHEDULE_AHEAD_S
    hms = sd.run("date", "-d", f"@{at}", "+%H:%M:%S").stdout.strip()
    schedule = f"*-*-* {hms}"
    installed.write_policy("nightly", f"[Policy]\nSource={installed.uri}\nCredential=mongo-pw\n"
                                      f"Schedule={schedule}\n")
    installed.reload()
    unit = "mongosnap-snapshot@nightly.timer"
    path = installed.policy_path("nightly")
    next_run = sd.wait_for(lambda: installed.prop(path, POLICY_IFACE, "NextRun"),
                           "NextRun of nightly", timeout=10)
    listed = sd.systemctl("list-timers", "--all", "--no-legend").stdout
    elapse = installed.timer_next_elapse(unit)
    timers_calendar = sd.unit_property(unit, "TimersCalendar")
    dropin = sd.read_file(installed.dropin("nightly"))
    verify = sd.run("systemd-analyze", "verify", unit, check=False)
    start = monotonic_usec(sd)
    ended = wait_unit_run_ended(sd, "mongosnap-snapshot@nightly.service", start,
                                timeout=SCHEDULE_AHEAD_S + TASK_TIMEOUT)
    return {"at": at, "schedule": schedule, "next_run": next_run, "elapse": elapse,
            "listed": listed, "timers_calendar": timers_calendar, "dropin": dropin,
            "verify": verify, "ended": ended}


def test_timer_fires_snapshot(installed: Installed, fired):
    sd = installed.sd
    unit = "mongosnap-snapshot@nightly.timer"
    assert unit in fired["listed"], fired["listed"]
    assert "OnCalendar=" + fired["schedule"] in fired["timers_calendar"], fired["timers_calendar"]
    # NextRun is systemd's answer, and the time the schedule says.
    assert fired["next_run"] == fired["elapse"], (fired["next_run"], fired["elapse"])
    assert fired["next_run"] == fired["at"] * 1_000_000, (fired["next_run"], fired["at"])
    # The drop-in, and the timer instance with it, as systemd-analyze sees it.
    dropin = fired["dropin"]
    for line in ("[Timer]", "OnCalendar=", f"OnCalendar={fired['schedule']}", "RandomizedDelaySec=0",
                 "Persistent=yes", "AccuracySec=1s"):
        assert line in dropin.splitlines(), dropin
    verify = fired["verify"]
    assert verify.returncode == 0 and not (verify.stdout + verify.stderr).strip(), \
        (verify.stdout, verify.stderr)
    # The timer fired the service, which ended successful with a completed snapshot.
    ended = fired["ended"]
    assert ended["Result"] == "success" and ended["ExecMainStatus"] == "0", \
        (ended, installed.journal("mongosnap-snapshot@nightly.service"))
    rows = installed.snapshots("nightly")
    assert [r[13] for r in rows] == ["completed"], rows
    assert sd.unit_property(unit, "LastTriggerUSec") not in ("", "n/a")
    # The next run is a day later; NextRun follows the timer.
    day_later = fired["next_run"] + 86_400 * 1_000_000
    sd.wait_for(lambda: installed.prop(installed.policy_path("nightly"), POLICY_IFACE,
                                       "NextRun") == day_later, "NextRun a day later", timeout=10)
    assert installed.timer_next_elapse(unit) == day_later


def test_event_log_in_journal(installed: Installed, fired):
    sd = installed.sd
    entries = sd.journal_entries("MONGOSNAP_POLICY=nightly")
    events = [e.get("MONGOSNAP_EVENT") for e in entries]
    assert events[0] == "task-queued" and events[-1] == "task-completed", events
    assert all(e.get("_SYSTEMD_UNIT") == "mongosnapd.service" for e in entries), entries
    # The catalog's text with the entries (journalctl -x), from the installed catalog.
    shown = sd.journalctl("-x", "MONGOSNAP_POLICY=nightly").stdout
    assert "Defined-By: mongosnap" in shown, shown
    assert re.search(r"Subject: Task nightly-\S+ of policy nightly queued", shown), shown
    # The password reached FerretDB through the credential, and is nowhere in the journal.
    assert DB_PASSWORD not in sd.journalctl("-o", "json", "--all").stdout


def test_edit_changes_timer(installed: Installed, fired):
    sd = installed.sd
    unit = "mongosnap-snapshot@nightly.timer"
    path = installed.policy_path("nightly")
    # Twelve hours from now: far from any moment this test could reach.
    at = int(sd.run("date", "+%s").stdout) + 12 * 3600
    hms = sd.run("date", "-d", f"@{at}", "+%H:%M:%S").stdout.strip()
    schedule = f"*-*-* {hms}"
    installed.call(path, POLICY_IFACE, "Edit", "a{ss}", 1, "Schedule", schedule)
    assert installed.prop(path, POLICY_IFACE, "Schedule") == schedule
    assert f"OnCalendar={schedule}" in sd.unit_property(unit, "TimersCalendar")
    assert f"OnCalendar={schedule}\n" in sd.read_file(installed.dropin("nightly"))
    sd.wait_for(lambda: installed.prop(path, POLICY_IFACE, "NextRun") == at * 1_000_000,
                "NextRun at the new schedule", timeout=10)
    assert installed.timer_next_elapse(unit) == at * 1_000_000


def test_stop_and_start_policy_timer(installed: Installed, fired):
    sd = installed.sd
    unit = "mongosnap-snapshot@nightly.timer"
    path = installed.policy_path("nightly")
    installed.call(path, POLICY_IFACE, "Stop")
    assert sd.unit_property(unit, "ActiveState") == "inactive"
    assert not sd.exists(installed.dropin("nightly"))
    assert unit not in sd.systemctl("list-timers", "--no-legend").stdout
    sd.wait_for(lambda: installed.prop(path, POLICY_IFACE, "NextRun") == 0, "NextRun 0",
                timeout=10)
    installed.call(path, POLICY_IFACE, "Start")
    assert sd.unit_property(unit, "ActiveState") == "active"
    assert sd.exists(installed.dropin("nightly"))
    assert unit in sd.systemctl("list-timers", "--no-legend").stdout
    sd.wait_for(lambda: installed.prop(path, POLICY_IFACE, "NextRun") ==
                installed.timer_next_elapse(unit) > 0, "NextRun back", timeout=10)


# ---- who may call what ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def operators(installed: Installed) -> Dict[str, List[str]]:
    """setpriv prefixes: a member of mongosnap, of mongosnap-readonly, and nobody."""
    sd = installed.sd
    sd.run("useradd", "--system", "--no-create-home", "-G", "mongosnap", OPERATOR)
    sd.run("useradd", "--system", "--no-create-home", "-G", "mongosnap-readonly", READER)
    as_user = lambda u: ["setpriv", f"--reuid={u}", f"--regid={u}", "--init-groups", "--"]  # noqa: E731
    return {"operator": as_user(OPERATOR), "reader": as_user(READER),
            "nobody": ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]}


def denied(cp: subprocess.CompletedProcess) -> bool:
    """Refused by the bus policy: busctl says "Access denied" for dbus-daemon's
    org.freedesktop.DBus.Error.AccessDenied (the agent's own refusal would show its message,
    "only root or members of the mongosnap group ...")."""
    return cp.returncode != 0 and ("Access denied" in cp.stderr or
                                   "Rejected send message" in cp.stderr)


def test_bus_access(installed: Installed, fired, operators):
    sd = installed.sd
    path = installed.policy_path("nightly")
    # Nobody: neither reading nor changing (the bus policy refuses both).
    for method in ("ListPolicies",):
        cp = installed.call(MANAGER_PATH, MANAGER_IFACE, method, user=operators["nobody"],
                            check=False)
        assert denied(cp), (cp.returncode, cp.stderr)
    cp = installed.call(path, POLICY_IFACE, "TakeSnapshot", user=operators["nobody"], check=False)
    assert denied(cp), (cp.returncode, cp.stderr)
    # A reader lists, reads properties and the log, and may not take a snapshot.
    cp = installed.call(MANAGER_PATH, MANAGER_IFACE, "ListPolicies", user=operators["reader"],
                        check=False)
    assert cp.returncode == 0 and "nightly" in cp.stdout, cp.stderr
    cp = sd.run(*operators["reader"], "busctl", "get-property", BUS_NAME, path, POLICY_IFACE,
                "Schedule", check=False)
    assert cp.returncode == 0, cp.stderr
    cp = installed.call(path, POLICY_IFACE, "GetLog", "su", "", 2, user=operators["reader"],
                        check=False)
    assert cp.returncode == 0, cp.stderr
    cp = installed.call(path, POLICY_IFACE, "TakeSnapshot", user=operators["reader"], check=False)
    assert denied(cp), (cp.returncode, cp.stderr)
    cp = sd.run(*operators["reader"], "mongosnapctl", "snapshot", "nightly", check=False)
    assert cp.returncode == 4, (cp.returncode, cp.stderr)  # access denied
    # In words a person acts on, not the bus daemon's rule dump.
    assert "permission denied" in cp.stderr and "group mongosnap" in cp.stderr, cp.stderr
    assert "Rejected send message" not in cp.stderr and "matched rules" not in cp.stderr
    # A download address reads every document: not for readers, whatever the store.
    cp = sd.run(*operators["reader"], "mongosnapctl", "--json", "list-snapshots", check=False)
    assert cp.returncode == 0, cp.stderr
    assert all(row["download_address"] == "" for row in json.loads(cp.stdout))
    # An operator manages the schedule and retention, but where secrets go is root's.
    cp = sd.run(*operators["operator"], "mongosnapctl", "edit", "nightly", "KeepLast=20",
                check=False)
    assert cp.returncode == 0, cp.stderr
    for setting in ("Source=mongodb://backup@elsewhere.invalid:27017/", "Credential=other",
                    "Store=/tmp/elsewhere", "Key=some-key"):
        cp = sd.run(*operators["operator"], "mongosnapctl", "edit", "nightly", setting,
                    check=False)
        assert cp.returncode == 4, (setting, cp.returncode, cp.stderr)
        assert "only root changes it" in cp.stderr, (setting, cp.stderr)
    assert "elsewhere" not in sd.read_file("/etc/mongosnap/policies.d/nightly.conf")
    # An operator (group mongosnap) may: the bus lets the call through, and so does the agent.
    before = len(installed.snapshots("nightly"))
    cp = installed.call(path, POLICY_IFACE, "TakeSnapshot", user=operators["operator"],
                        check=False)
    assert cp.returncode == 0, (cp.stderr, installed.journal())
    snap = json.loads(cp.stdout)["data"][0]
    assert installed.wait_state(snap, ("completed", "failed")) == "completed"
    assert len(installed.snapshots("nightly")) == before + 1


OPEN_BUS_POLICY = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy context="default">
    <allow send_destination="io.mongosnap1"/>
  </policy>
</busconfig>
"""


def test_agent_checks_callers_itself(installed: Installed, fired, operators):
    """With a bus policy that lets everyone through, the agent refuses by itself what the
    package's policy would: changes by anyone but root and the mongosnap group."""
    sd = installed.sd
    path = installed.policy_path("nightly")
    reload_bus = ("busctl", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
                  "org.freedesktop.DBus", "ReloadConfig")
    sd.write_file("/etc/dbus-1/system.d/zz-test-open.conf", OPEN_BUS_POLICY)
    sd.run(*reload_bus)
    try:
        for who in ("nobody", "reader"):
            cp = installed.call(path, POLICY_IFACE, "Stop", user=operators[who], check=False)
            assert cp.returncode != 0 and \
                "only root or members of the mongosnap group may" in cp.stderr, (who, cp.stderr)
            # Reading is the bus policy's business only.
            cp = installed.call(MANAGER_PATH, MANAGER_IFACE, "ListPolicies", user=operators[who],
                                check=False)
            assert cp.returncode == 0, (who, cp.stderr)
        assert installed.prop(path, POLICY_IFACE, "State") == "active"
        # And the operator still may.
        installed.call(path, POLICY_IFACE, "Stop", user=operators["operator"])
        installed.call(path, POLICY_IFACE, "Start", user=operators["operator"])
        assert installed.prop(path, POLICY_IFACE, "State") == "active"
    finally:
        sd.run("rm", "-f", "/etc/dbus-1/system.d/zz-test-open.conf")
        sd.run(*reload_bus)


# ---- stop, watchdog, failure ------------------------------------------------------------------

def test_stop_during_snapshot_interrupts(installed: Installed, fired):
    sd = installed.sd
    # The driver gives up on the SIGSTOPped server after 8 s; the agent gives workers 30 s.
    installed.write_policy("slow", f"[Policy]\nSource={installed.uri}&serverSelectionTimeoutMS=8000"
                                   "&connectTimeoutMS=8000\nCredential=mongo-pw\n")
    installed.reload()
    sd.systemctl("kill", "--signal=SIGSTOP", "ferretdb.service")
    try:
        (snap,) = installed.call(installed.policy_path("slow"), POLICY_IFACE, "TakeSnapshot")
        sid = installed.prop(snap, SNAPSHOT_IFACE, "Id")
        installed.wait_state(snap, ("running",), timeout=20)
        t0 = time.monotonic()
        sd.systemctl("stop", "mongosnapd.service", timeout=90)
        took = time.monotonic() - t0
    finally:
        sd.systemctl("kill", "--signal=SIGCONT", "ferretdb.service")
    # Ended by itself, cleanly: not by the stop timeout's SIGKILL.
    assert sd.unit_property("mongosnapd.service", "Result") == "success", installed.journal()
    assert took < 45, took
    assert "SIGKILL" not in installed.journal(lines=30)
    # A call starts the agent again (D-Bus activation), which lists the snapshot interrupted.
    rows = installed.snapshots("slow")
    assert sd.unit_property("mongosnapd.service", "ActiveState") == "active"
    assert [(r[0], r[13]) for r in rows] == [(sid, "interrupted")], rows


def test_watchdog_restarts_hung_agent(installed: Installed, fired):
    sd = installed.sd
    # A short watchdog for the test; no core dump of the killed agent, wherever the host's
    # core_pattern would send it.
    signal = "SIGKILL" if Path("/proc/sys/kernel/core_pattern").read_text().startswith("|") else ""
    sd.write_file("/etc/systemd/system/mongosnapd.service.d/50-test-watchdog.conf",
                  "[Service]\nWatchdogSec=5s\nTimeoutAbortSec=5s\nLimitCORE=0\n" +
                  (f"WatchdogSignal={signal}\n" if signal else ""))
    sd.systemctl("daemon-reload")
    sd.systemctl("restart", "mongosnapd.service", timeout=60)
    try:
        assert sd.unit_property("mongosnapd.service", "WatchdogUSec") == "5s"
        pid = int(sd.unit_property("mongosnapd.service", "MainPID"))
        restarts = int(sd.unit_property("mongosnapd.service", "NRestarts"))
        assert pid > 0
        sd.run("kill", "-STOP", str(pid))
        new_pid = sd.wait_for(
            lambda: (lambda p: p if p not in (0, pid) and
                     sd.unit_property("mongosnapd.service", "ActiveState") == "active" else None)(
                int(sd.unit_property("mongosnapd.service", "MainPID"))),
            "mongosnapd restarted by the watchdog", timeout=30, interval=0.5)
        assert int(sd.unit_property("mongosnapd.service", "NRestarts")) == restarts + 1
        assert "Watchdog timeout" in sd.journalctl("-u", "mongosnapd", "-n", "40").stdout
        assert new_pid != pid
        # The restarted agent serves again.
        assert installed.call(MANAGER_PATH, MANAGER_IFACE, "ListPolicies")
    finally:
        sd.run("rm", "-f", "/etc/systemd/system/mongosnapd.service.d/50-test-watchdog.conf")
        sd.systemctl("daemon-reload")


def test_snapshot_unit_fails_when_source_unreachable(installed: Installed, fired):
    sd = installed.sd
    # A closed port of the namespace's own loopback: refused at once.
    installed.write_policy("bad", "[Policy]\nSource=mongodb://127.0.0.1:9/?"
                                  "serverSelectionTimeoutMS=500&connectTimeoutMS=500\n")
    installed.reload()
    cp = sd.systemctl("start", "mongosnap-snapshot@bad.service", check=False, timeout=90)
    assert cp.returncode != 0, cp.stdout
    assert sd.unit_property("mongosnap-snapshot@bad.service", "ActiveState") == "failed"
    assert sd.unit_property("mongosnap-snapshot@bad.service", "Result") == "exit-code"
    assert sd.unit_property("mongosnap-snapshot@bad.service", "ExecMainStatus") == "1"
    log = sd.journalctl("-u", "mongosnap-snapshot@bad.service", "-o", "cat").stdout
    rows = installed.snapshots("bad")
    assert [r[13] for r in rows] == ["failed"], rows
    error = rows[0][14]
    assert error and "failed" in log, log
    assert error in log or error.split(":")[0] in log, (error, log)
    assert "127.0.0.1:9" in log or "reach" in log.lower(), log


def test_host_untouched(installed: Installed):
    assert installed.sd.host_changes() == []
