"""mongosnapctl against mongosnapd: every verb's table and --json output checked against what
busctl reports, exit codes, --wait with its progress bar on a pseudo-terminal, Ctrl-C, secrets
kept out of the output and off the command line. Most tests use a private bus (--address); the
log tests run mongosnapctl on the system bus of a systemd booted in a namespace (systemd_boot.py),
so that the Event Log is in a real journal."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import tempfile
import termios
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest

from agent_fixtures import *  # noqa: F401,F403
from agent_fixtures import server_paused  # noqa: F401
from agent_fixtures import (BUS_NAME, MANAGER_IFACE, MANAGER_PATH, POLICY_IFACE, SNAPSHOT_IFACE,
                            Agent, DBusDaemon)
from conftest import BUILD_DIR
from systemd_boot import BootedSystemd, booted_systemd  # noqa: F401 - the fixture
from minio_fixtures import minio, s3_bucket  # noqa: F401 - the fixtures

CTL = BUILD_DIR / "src" / "ctl" / "mongosnapctl"
CTL_TIMEOUT = 120.0
PTY_COLUMNS = 100
# Wide enough for a snapshot table once its ERROR column is cut (its other columns alone need
# about 160).
PTY_WIDE_COLUMNS = 200
PTY_ROWS = 40
READ_CHUNK = 65536
DOCS_PER_COLLECTION = 300
COLLECTIONS = ("orders", "users", "events")
UNREACHABLE_SOURCE = "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=500&connectTimeoutMS=500"
# Columns are separated by at least two spaces (times hold single ones).
COLUMN_GAP = re.compile(r"\s{2,}")
RESTORE_ROW_COLUMNS = ("id", "snapshot", "target", "task_log", "elapsed_usec", "items",
                       "items_total", "progress", "create_usec", "state", "error", "path")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_ACCESS_DENIED, EXIT_NOT_FOUND = range(6)
EXIT_INTERRUPTED = 130

VERBS = ("list-policies", "status", "list-snapshots", "list-restores", "snapshot", "stop",
         "start", "delete", "rebuild", "edit", "create-policy", "restore", "verify", "cancel",
         "delete-snapshot", "download-url", "log", "update", "resync", "show", "set-credential",
         "list-slices", "verify-chain", "export")


# ---- helpers ---------------------------------------------------------------------------------

def ctl_env(**extra: str) -> Dict[str, str]:
    env = dict(os.environ)
    # Deterministic times ("Sun 2026-11-22 05:38:10 UTC") and "…" in cut cells.
    env.update({"TZ": "UTC", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
                "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0"})
    env.pop("COLUMNS", None)
    env.update(extra)
    return env


def ctl_command(address: Optional[str], *args: str) -> List[str]:
    if not CTL.exists():
        pytest.fail(f"mongosnapctl is not built: {CTL}", pytrace=False)
    cmd = [str(CTL)]
    if address:
        cmd.append(f"--address={address}")
    return cmd + [str(a) for a in args]


def run_ctl(address: Optional[str], *args: str, expect: Optional[int] = EXIT_OK,
            env: Optional[Dict[str, str]] = None,
            timeout: float = CTL_TIMEOUT) -> subprocess.CompletedProcess:
    cmd = ctl_command(address, *args)
    cp = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                        stdin=subprocess.DEVNULL, env=env or ctl_env())
    if expect is not None:
        assert cp.returncode == expect, (
            f"{' '.join(cmd)}: exit {cp.returncode}, wanted {expect}\n"
            f"stdout:\n{cp.stdout}\nstderr:\n{cp.stderr}")
    # The ctl binary is built with ASan/UBSan: its own reports fail the test.
    assert "runtime error" not in cp.stderr and "Sanitizer" not in cp.stderr, cp.stderr
    return cp


def ctl(agent, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return run_ctl(agent.bus.address, *args, **kwargs)


def ctl_json(agent, *args: str):
    return json.loads(ctl(agent, "--json", *args).stdout)


def table_rows(text: str) -> List[List[str]]:
    return [COLUMN_GAP.split(line.strip()) for line in text.splitlines() if line.strip()]


def parse_table(text: str) -> Dict[str, object]:
    """{"header": [...], "rows": [[...]], "legend": "N things listed."} of a table with legend."""
    lines = text.rstrip("\n").split("\n")
    assert len(lines) >= 3 and lines[-2] == "", text
    return {"header": COLUMN_GAP.split(lines[0].strip()),
            "rows": table_rows("\n".join(lines[1:-2])), "legend": lines[-1]}


def human_size(n: int) -> str:
    """What mongosnapctl prints for a size: systemd's base-1024 form with one decimal."""
    if n < 1024:
        return f"{n}B"
    factor, unit = 1024, 0
    while unit < 5 and n // factor >= 1024:
        factor *= 1024
        unit += 1
    tenth = min(int(float(n % factor) * 10 / float(factor)), 9)
    return f"{n // factor}.{tenth}{'KMGTPE'[unit]}"


def short_time(usec: int) -> str:
    return datetime.fromtimestamp(usec // 1_000_000, timezone.utc).strftime("%Y-%m-%d %H:%M")


def local_time(usec: int) -> str:
    if usec == 0:
        return "-"
    return datetime.fromtimestamp(usec // 1_000_000, timezone.utc).strftime("%a %Y-%m-%d %H:%M:%S UTC")


def iso_time(usec: int) -> Optional[str]:
    if usec == 0:
        return None
    return datetime.fromtimestamp(usec // 1_000_000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def cell(value: str) -> str:
    return value if value else "-"


def seed(client, db: str = "shop") -> int:
    for name in COLLECTIONS:
        client[db][name].insert_many([{"i": i, "name": f"{name}-{i}", "pad": "x" * 100}
                                      for i in range(DOCS_PER_COLLECTION)])
    return DOCS_PER_COLLECTION * len(COLLECTIONS)


def list_restores(agent) -> List[dict]:
    (rows,) = agent.call(MANAGER_PATH, MANAGER_IFACE, "ListRestores")
    return [dict(zip(RESTORE_ROW_COLUMNS, r)) for r in rows]


def completed_snapshot(agent, policy: str) -> str:
    """Take a snapshot of policy through mongosnapctl and wait for it; returns its id."""
    cp = ctl(agent, "snapshot", policy, "--wait")
    sid = cp.stdout.split(":", 1)[0]
    assert agent.snapshot(sid)["state"] == "completed", cp.stdout
    return sid


class PtyRun:
    """mongosnapctl on a pseudo-terminal of PTY_COLUMNS columns: everything it writes is kept."""

    def __init__(self, args: Sequence[str], env: Optional[Dict[str, str]] = None,
                 columns: int = PTY_COLUMNS):
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", PTY_ROWS, columns, 0, 0))
        self.proc = subprocess.Popen(list(args), stdin=slave, stdout=slave, stderr=slave,
                                     env=env or ctl_env(TERM="xterm"), close_fds=True)
        os.close(slave)
        self.output = b""

    def read_until(self, predicate, timeout: float) -> bool:
        """Read until predicate(text) holds or the process has exited and drained."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.text):
                return True
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(self.master, READ_CHUNK)
                except OSError as e:  # EIO: the slave side is closed, the process is gone
                    if e.errno != errno.EIO:
                        raise
                    data = b""
                if not data and self.proc.poll() is not None:
                    return predicate(self.text)
                self.output += data
        return predicate(self.text)

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")

    def finish(self, timeout: float = CTL_TIMEOUT) -> int:
        self.read_until(lambda _t: self.proc.poll() is not None, timeout)
        rc = self.proc.wait(timeout=timeout)
        # What it wrote just before exiting may still be in the terminal's buffer.
        self.read_until(lambda _t: False, 0.2)
        os.close(self.master)
        return rc


# ---- listing ---------------------------------------------------------------------------------

def test_ctl_list_policies_matches_bus(agent, ferretdb):
    agent.write_policy("alpha", ferretdb.uri, Schedule="daily", retention_KeepLast="3")
    agent.write_policy("beta", ferretdb.uri)
    agent.start()
    bus_rows = agent.list_policies()
    assert [r["name"] for r in bus_rows] == ["alpha", "beta"]

    table = parse_table(ctl(agent, "list-policies").stdout)
    assert table["header"] == ["POLICY", "STATE", "SCHEDULE", "LAST RUN", "RESULT", "NEXT RUN",
                               "STORE", "SOURCE", "PROBLEM"]
    assert table["legend"] == "2 policies listed."
    expected = [[r["name"], r["state"], cell(r["schedule"]), local_time(r["last_run"]),
                 cell(r["last_result"]), local_time(r["next_run"]), r["store"], r["source"],
                 cell(r["problem"])]
                for r in bus_rows]
    # A scheduled policy always says when it runs next, never a time in the past.
    alpha = next(r for r in bus_rows if r["name"] == "alpha")
    assert alpha["next_run"] > time.time() * 1_000_000, alpha
    assert table["rows"] == expected

    # --no-legend: rows only, no header and no footer.
    assert table_rows(ctl(agent, "--no-legend", "list-policies").stdout) == expected

    rows = ctl_json(agent, "list-policies")
    assert [r["name"] for r in rows] == ["alpha", "beta"]
    for got, want in zip(rows, bus_rows):
        for key in ("name", "path", "state", "source", "schedule", "store", "last_result"):
            assert got[key] == want[key], key
        assert got["last_run_usec"] == want["last_run"] and got["last_run"] == iso_time(want["last_run"])
        assert got["next_run_usec"] == want["next_run"] and got["next_run"] == iso_time(want["next_run"])


def test_ctl_status_of_agent_and_policy(agent, ferretdb):
    agent.write_policy("alpha", ferretdb.uri, Schedule="daily", retention_KeepLast="3",
                       retention_MaxAge="30d", ExcludeNamespaces="shop.tmp*")
    (agent.policy_dir / "broken.conf").write_text("[Policy]\nSourc=mongodb://x\n")
    agent.start()

    out = ctl(agent, "status").stdout
    assert re.search(r"^\s*Version: " + re.escape(agent.prop(MANAGER_PATH, MANAGER_IFACE, "Version")), out, re.M), out
    assert re.search(r"^\s*Node: test-node$", out, re.M), out
    assert re.search(r"^\s*Cluster: none \(this agent works alone\)$", out, re.M), out
    assert "broken.conf:2" in out and "1 policy listed." in out, out
    summary = ctl_json(agent, "status")
    assert summary["version"] == agent.prop(MANAGER_PATH, MANAGER_IFACE, "Version")
    assert summary["node"] == "test-node"
    assert summary["cluster"] == ""
    assert summary["policy_errors"] == agent.prop(MANAGER_PATH, MANAGER_IFACE, "PolicyErrors")
    assert [p["name"] for p in summary["policies"]] == ["alpha"]

    path = agent.policy_path("alpha")
    text = ctl(agent, "status", "alpha").stdout
    assert text.splitlines()[0].endswith(" alpha"), text
    for label, value in (("State", "active"), ("Schedule", "daily"), ("Store", str(agent.store)),
                         ("Source", agent.prop(path, POLICY_IFACE, "Source")),
                         ("Exclude", "shop.tmp*"), ("Retention", "KeepLast=3 MaxAge=30d")):
        assert re.search(rf"^\s*{label}: {re.escape(value)}$", text, re.M), (label, text)

    status = ctl_json(agent, "status", "alpha")
    expected = {"name": "Name", "source": "Source", "schedule": "Schedule", "store": "Store",
                "compression": "Compression", "compression_level": "CompressionLevel",
                "parallel_collections": "ParallelCollections", "keep_last": "KeepLast",
                "max_age_usec": "MaxAgeUSec", "exclude_namespaces": "ExcludeNamespaces",
                "include_users": "IncludeUsers", "oplog": "Oplog", "state": "State",
                "last_result": "LastResult", "running_snapshot": "RunningSnapshot",
                "randomized_delay_usec": "RandomizedDelayUSec", "persistent": "Persistent"}
    for key, prop in expected.items():
        assert status[key] == agent.prop(path, POLICY_IFACE, prop), key
    assert status["last_run_usec"] == agent.prop(path, POLICY_IFACE, "LastRun")
    assert status["running_task"] is None


def test_ctl_snapshot_wait_lists_and_updates(agent, fresh_db):
    total = seed(fresh_db.client)
    agent.write_policy("nightly", fresh_db.uri, retention_KeepLast="3")
    agent.write_policy("other", fresh_db.uri)
    agent.start()

    cp = ctl(agent, "snapshot", "nightly", "--wait")
    # Not on a terminal: no progress, only the final line.
    assert cp.stderr == ""
    lines = cp.stdout.splitlines()
    assert len(lines) == 1 and re.fullmatch(rf"nightly-\S+: completed, {total} items, \S+ in \S+.*",
                                             lines[0]), cp.stdout
    sid = lines[0].split(":", 1)[0]
    row = agent.snapshot(sid)
    assert row["state"] == "completed" and row["items"] == total

    # The default table: every value whole, a download marker, the rule that keeps it.
    table = parse_table(ctl(agent, "list-snapshots").stdout)
    assert table["header"] == ["TASK", "POLICY", "NODE", "STATE", "VERIFIED", "ITEMS", "SIZE",
                               "CREATED", "EXPIRES", "FILE", "DL", "ERROR"]
    assert table["legend"] == "1 snapshot listed."
    (cells,) = table["rows"]
    assert cells == [sid, "nightly", "test-node", "completed", "-", str(total),
                     human_size(row["bytes"]), short_time(row["create_usec"]), "(KeepLast=3)",
                     row["file_name"], "-", "-"], cells
    # --full: everything, whole.
    table = parse_table(ctl(agent, "--full", "list-snapshots").stdout)
    assert table["header"] == ["TASK", "POLICY", "NODE", "STATE", "VERIFIED", "PROGRESS", "ITEMS",
                               "TRANSFERRED", "ELAPSED", "CREATED", "EXPIRES", "FILE", "DOWNLOAD",
                               "ERROR"]
    (cells,) = table["rows"]
    assert cells[:7] == [sid, "nightly", "test-node", "completed", "-", "100.0%", str(total)], cells
    assert cells[9:] == [local_time(row["create_usec"]), "-, KeepLast=3", row["file_name"], "-",
                         "-"], cells

    (js,) = ctl_json(agent, "list-snapshots")
    assert js["id"] == sid and js["path"] == row["path"] and js["task_log"] == row["task_log"]
    for key, bus_key in (("policy", "policy"), ("node", "node"), ("file_name", "file_name"),
                         ("download_address", "download_address"), ("items", "items"),
                         ("items_total", "items_total"), ("progress", "progress"),
                         ("bytes_transferred", "bytes"), ("state", "state"), ("error", "error"),
                         ("elapsed_usec", "elapsed_usec"), ("create_time_usec", "create_usec"),
                         ("expire_time_usec", "expire_usec")):
        assert js[key] == row[bus_key], key
    assert js["create_time"] == iso_time(row["create_usec"]) and js["expire_time"] is None

    # A policy filter, and a policy without snapshots.
    assert [r["id"] for r in ctl_json(agent, "list-snapshots", "nightly")] == [sid]
    assert ctl_json(agent, "list-snapshots", "other") == []
    assert table_rows(ctl(agent, "--no-legend", "list-snapshots", "other").stdout) == []
    assert ctl(agent, "list-snapshots", "other").stdout.strip().endswith("0 snapshots listed.")

    # update: both tables, and JSON equal to Update's reply.
    snapshots, restores = agent.call(MANAGER_PATH, MANAGER_IFACE, "Update")
    updated = ctl_json(agent, "update")
    assert [s["id"] for s in updated["snapshots"]] == [s[0] for s in snapshots]
    assert [s["state"] for s in updated["snapshots"]] == [s[13] for s in snapshots]
    assert updated["restores"] == [] and restores == []
    text = ctl(agent, "update").stdout
    assert "1 snapshot listed." in text and "0 restores listed." in text, text

    # The policy's status shows the run.
    status = ctl(agent, "status", "nightly").stdout
    assert re.search(r"Last run: .*; completed$", status, re.M), status


def test_ctl_snapshot_without_wait_prints_the_task(agent, fresh_db):
    seed(fresh_db.client)
    agent.write_policy("p", fresh_db.uri)
    agent.start()
    sid = ctl(agent, "snapshot", "p").stdout.strip()
    assert [s["id"] for s in agent.list_snapshots("p")] == [sid]
    agent.wait_snapshot_state(agent.snapshot(sid)["path"], ("completed", "failed"))
    got = ctl_json(agent, "snapshot", "p")
    assert set(got) == {"id", "path"} and got["id"] != sid
    assert agent.snapshot(got["id"])["path"] == got["path"]
    # -q: nothing on stdout, whether the next one is queued or refused as busy.
    assert ctl(agent, "-q", "snapshot", "p", expect=None).stdout == ""


def test_ctl_snapshot_wait_fails_for_unreachable_source(agent):
    agent.write_policy("broken", UNREACHABLE_SOURCE)
    agent.start()
    cp = ctl(agent, "snapshot", "broken", "--wait", expect=EXIT_FAILED)
    (row,) = agent.list_snapshots("broken")
    assert row["state"] == "failed"
    assert cp.stderr.startswith(f"mongosnapctl: {row['id']}: failed: "), cp.stderr
    assert "127.0.0.1:9" in cp.stderr
    # The long error is not cut when stdout is not a terminal.
    table = parse_table(ctl(agent, "list-snapshots").stdout)
    assert table["rows"][0][-1] == row["error"]


def test_ctl_tables_fit_the_terminal_and_page(agent):
    agent.write_policy("broken", UNREACHABLE_SOURCE)
    agent.start()
    ctl(agent, "snapshot", "broken", "--wait", expect=EXIT_FAILED)

    run = PtyRun(ctl_command(agent.bus.address, "--no-pager", "list-snapshots"),
                 columns=PTY_WIDE_COLUMNS)
    assert run.finish() == EXIT_OK
    lines = [ln for ln in run.text.replace("\r", "").split("\n") if ln]
    assert lines[0].startswith("TASK") and lines[-1] == "1 snapshot listed.", run.text
    assert all(len(ln) <= PTY_WIDE_COLUMNS for ln in lines), lines
    assert "…" in lines[1], lines  # the ERROR column was cut with an ellipsis

    # A pager only on a terminal, never for JSON.
    env = ctl_env(TERM="xterm", SYSTEMD_PAGER="sed s/^/PAGED:/")
    run = PtyRun(ctl_command(agent.bus.address, "list-policies"), env=env)
    assert run.finish() == EXIT_OK
    assert "PAGED:POLICY" in run.text and "PAGED:1 policy listed." in run.text, run.text
    run = PtyRun(ctl_command(agent.bus.address, "--json", "list-policies"), env=env)
    assert run.finish() == EXIT_OK
    assert "PAGED:" not in run.text and json.loads(run.text)[0]["name"] == "broken"
    cp = run_ctl(agent.bus.address, "list-policies", env=ctl_env(SYSTEMD_PAGER="sed s/^/PAGED:/"))
    assert "PAGED:" not in cp.stdout  # stdout is not a terminal


# ---- exit codes ------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (("frobnicate",), "unknown verb 'frobnicate'"),
    (("--frobnicate", "list-policies"), "unknown option '--frobnicate'"),
    ((), "no verb given"),
    (("snapshot",), "usage: mongosnapctl snapshot POLICY"),
    (("stop", "a", "b"), "usage: mongosnapctl stop POLICY"),
    (("stop", "p", "--wait"), "--wait does not apply to 'stop'"),
    (("list-policies", "--to", "mongodb://h/"), "does not apply to 'list-policies'"),
    (("edit", "p", "Schedule"), "'Schedule' is not KEY=VALUE"),
    (("edit", "p", "=daily"), "'=daily' is not KEY=VALUE"),
    (("create-policy", "p", "Source"), "'Source' is not KEY=VALUE"),
    (("restore", "s"), "restore needs --to URI"),
    (("restore", "s", "--to", "mongodb://h/", "--ns-from", "a.*"), "--ns-from and --ns-to pair up"),
    (("restore", "s", "--to", "mongodb://h/", "--parallel", "0"), "--parallel wants a number"),
    (("log", "p", "-n", "many"), "--lines wants a number"),
    (("log",), "usage: mongosnapctl log"),
    (("--address",), "option '--address' needs a value"),
])
def test_ctl_usage_errors_exit_2(dbus_bus, args, message):
    # Usage errors are found before the bus is asked anything: no agent runs here.
    cp = run_ctl(dbus_bus.address, *args, expect=EXIT_USAGE)
    assert cp.stderr.startswith("mongosnapctl: ") and message in cp.stderr, cp.stderr
    assert cp.stdout == ""


def test_ctl_agent_not_running_exits_3(dbus_bus, tmp_path):
    cp = run_ctl(dbus_bus.address, "list-policies", expect=EXIT_UNREACHABLE)
    assert cp.stderr.startswith("mongosnapctl: list-policies: ") and BUS_NAME in cp.stderr, cp.stderr
    run_ctl(dbus_bus.address, "snapshot", "p", expect=EXIT_UNREACHABLE)
    cp = run_ctl(f"unix:path={tmp_path}/no-bus-here", "status", expect=EXIT_UNREACHABLE)
    assert "cannot connect" in cp.stderr, cp.stderr
    # Without --address: the system bus named by $DBUS_SYSTEM_BUS_ADDRESS.
    env = ctl_env(DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={tmp_path}/no-bus-here")
    run_ctl(None, "list-policies", env=env, expect=EXIT_UNREACHABLE)


def test_ctl_system_bus_from_environment(agent, ferretdb):
    agent.write_policy("alpha", ferretdb.uri)
    agent.start()
    env = ctl_env(DBUS_SYSTEM_BUS_ADDRESS=agent.bus.address)
    cp = run_ctl(None, "--no-legend", "list-policies", env=env)
    assert [r[0] for r in table_rows(cp.stdout)] == ["alpha"]


def test_ctl_unknown_names_exit_5(agent, ferretdb):
    agent.write_policy("alpha", ferretdb.uri)
    agent.start()
    for args in (("snapshot", "nosuch"), ("stop", "nosuch"), ("start", "nosuch"),
                 ("delete", "nosuch"), ("rebuild", "nosuch"), ("edit", "nosuch", "Schedule=daily"),
                 ("status", "nosuch"), ("list-snapshots", "nosuch")):
        cp = ctl(agent, *args, expect=EXIT_NOT_FOUND)
        assert cp.stderr.startswith(f"mongosnapctl: {args[0]}") and "nosuch" in cp.stderr, cp.stderr
    for args in (("verify", "nosuch-1"), ("delete-snapshot", "nosuch-1"), ("cancel", "nosuch-1"),
                 ("restore", "nosuch-1", "--to", "mongodb://127.0.0.1:9/")):
        cp = ctl(agent, *args, expect=EXIT_NOT_FOUND)
        assert "nosuch-1" in cp.stderr, cp.stderr
    # The policy is untouched.
    assert [p["name"] for p in agent.list_policies()] == ["alpha"]


OPEN_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""
NOBODY = 65534


class OpenDBusDaemon(DBusDaemon):
    """A private bus that users other than root may connect to, in a directory they can reach
    (the test's own temporary directories are private to root)."""

    def start(self) -> "OpenDBusDaemon":
        self.workdir.chmod(0o755)
        self.config.write_text(OPEN_BUS_CONFIG.format(socket=self.socket))
        self.proc = subprocess.Popen(
            ["dbus-daemon", f"--config-file={self.config}", "--nofork"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + CTL_TIMEOUT
        while not self.socket.exists():
            assert self.proc.poll() is None and time.monotonic() < deadline, "dbus-daemon failed"
            time.sleep(0.02)
        return self


def test_ctl_access_denied_exits_4(tools, tmp_path_factory, ferretdb):
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to call as another user")
    bus_dir = Path(tempfile.mkdtemp(prefix="mongosnapctl-bus-"))
    bus = OpenDBusDaemon(bus_dir).start()
    agent = Agent(tmp_path_factory.mktemp("agent-open-bus"), bus, tools.require("worker"))
    try:
        agent.write_policy("alpha", ferretdb.uri)
        agent.start()

        def as_nobody(*args: str) -> subprocess.CompletedProcess:
            cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--",
                   *ctl_command(bus.address, *args)]
            return subprocess.run(cmd, capture_output=True, text=True, timeout=CTL_TIMEOUT,
                                  env=ctl_env(), stdin=subprocess.DEVNULL)

        cp = as_nobody("stop", "alpha")
        assert cp.returncode == EXIT_ACCESS_DENIED, (cp.returncode, cp.stderr)
        assert cp.stderr.startswith("mongosnapctl: stop alpha: "), cp.stderr
        cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--",
               *ctl_command(bus.address, "set-credential", "planted")]
        cp = subprocess.run(cmd, input="secret\n", capture_output=True, text=True,
                            timeout=CTL_TIMEOUT, env=ctl_env())
        assert cp.returncode == EXIT_ACCESS_DENIED, (cp.returncode, cp.stderr)
        assert agent.prop(agent.policy_path("alpha"), POLICY_IFACE, "State") == "active"
        # Reading stays open to everyone.
        cp = as_nobody("--no-legend", "list-policies")
        assert cp.returncode == EXIT_OK and cp.stdout.startswith("alpha "), cp.stderr
    finally:
        agent.close()
        bus.stop()
        shutil.rmtree(bus_dir, ignore_errors=True)


# ---- changing policies -----------------------------------------------------------------------

def test_ctl_edit_valid_and_invalid_keys(agent, ferretdb):
    agent.write_policy("alpha", ferretdb.uri, Schedule="daily")
    agent.start()
    path = agent.policy_path("alpha")
    cp = ctl(agent, "edit", "alpha", "Schedule=weekly", "Retention.KeepDaily=7", "KeepLast=2")
    # One line says what changed and when it runs next.
    assert re.fullmatch(r"Policy alpha changed: Schedule=weekly, Retention.KeepDaily=7, "
                        r"KeepLast=2; next run \w{3} \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \w+\.\n",
                        cp.stdout), cp.stdout
    assert cp.stderr == "", cp.stderr
    assert ctl(agent, "--quiet", "edit", "alpha", "Schedule=weekly").stdout == ""
    assert agent.prop(path, POLICY_IFACE, "Schedule") == "weekly"
    assert agent.prop(path, POLICY_IFACE, "KeepDaily") == 7
    assert agent.prop(path, POLICY_IFACE, "KeepLast") == 2
    text = (agent.policy_dir / "alpha.conf").read_text()
    assert "Schedule=weekly" in text and "KeepDaily=7" in text, text

    cp = ctl(agent, "edit", "alpha", "Schedule=daily", "Bogus=1", expect=EXIT_USAGE)
    assert cp.stderr.startswith("mongosnapctl: edit alpha: ") and "'Bogus'" in cp.stderr, cp.stderr
    cp = ctl(agent, "edit", "alpha", "KeepLast=many", expect=EXIT_USAGE)
    assert "KeepLast" in cp.stderr, cp.stderr
    # All or nothing: nothing of the refused edits was applied.
    assert agent.prop(path, POLICY_IFACE, "Schedule") == "weekly"
    assert agent.prop(path, POLICY_IFACE, "KeepLast") == 2
    # An empty value restores the default.
    ctl(agent, "edit", "alpha", "Schedule=")
    assert agent.prop(path, POLICY_IFACE, "Schedule") == ""


def test_ctl_stop_start_delete(agent, fresh_db):
    seed(fresh_db.client)
    agent.write_policy("alpha", fresh_db.uri)
    agent.write_policy("beta", fresh_db.uri)
    agent.start()
    path = agent.policy_path("alpha")
    cp = ctl(agent, "stop", "alpha")
    assert cp.stdout.startswith("Policy alpha stopped: ") and cp.stdout.count("\n") == 1, cp.stdout
    assert agent.prop(path, POLICY_IFACE, "State") == "stopped"
    rows = table_rows(ctl(agent, "--no-legend", "list-policies").stdout)
    assert [(r[0], r[1]) for r in rows] == [("alpha", "stopped"), ("beta", "active")]
    cp = ctl(agent, "snapshot", "alpha", expect=EXIT_FAILED)
    assert "mongosnapctl: snapshot alpha: " in cp.stderr, cp.stderr
    cp = ctl(agent, "start", "alpha")
    assert cp.stdout == "Policy alpha started.\n", cp.stdout  # no Schedule=: no next run
    assert agent.prop(path, POLICY_IFACE, "State") == "active"

    sid = completed_snapshot(agent, "beta")
    cp = ctl(agent, "delete", "alpha")
    assert cp.stdout.startswith("Policy alpha deleted: ") and "kept" in cp.stdout, cp.stdout
    assert [p["name"] for p in agent.list_policies()] == ["beta"]
    assert not (agent.policy_dir / "alpha.conf").exists()
    cp = ctl(agent, "delete", "beta", "--purge-remote")
    assert "being removed too" in cp.stdout, cp.stdout
    assert agent.list_policies() == []
    assert agent.snapshot(sid)["state"] == "deleted"
    assert ctl(agent, "list-policies").stdout.strip() .endswith("0 policies listed.")


def test_ctl_create_policy(agent, ferretdb):
    agent.start()
    got = ctl_json(agent, "create-policy", "fresh", f"Source={ferretdb.uri}", "Schedule=daily",
                   "Retention.KeepLast=4")
    assert got["name"] == "fresh" and got["path"] == agent.policy_path("fresh")
    assert agent.prop(got["path"], POLICY_IFACE, "KeepLast") == 4
    assert agent.prop(got["path"], POLICY_IFACE, "Schedule") == "daily"
    assert (agent.policy_dir / "fresh.conf").is_file()
    cp = ctl(agent, "create-policy", "quiet", f"Source={ferretdb.uri}")
    assert cp.stdout == "Policy quiet created.\n" and cp.stderr == "", (cp.stdout, cp.stderr)
    # A policy that cannot run as written is created, and the warning says why.
    cp = ctl(agent, "create-policy", "needy", f"Source={ferretdb.uri}", "Credential=not-there")
    assert cp.stdout == "Policy needy created.\n", cp.stdout
    assert cp.stderr.startswith("mongosnapctl: warning: it cannot run as written: credential "
                                "'not-there' is not available"), cp.stderr
    ctl(agent, "delete", "needy")
    assert [p["name"] for p in agent.list_policies()] == ["fresh", "quiet"]

    cp = ctl(agent, "create-policy", "fresh", f"Source={ferretdb.uri}", expect=EXIT_FAILED)
    assert cp.stderr.startswith("mongosnapctl: create-policy fresh: "), cp.stderr
    cp = ctl(agent, "create-policy", "nosource", "Schedule=daily", expect=EXIT_USAGE)
    assert "Source" in cp.stderr, cp.stderr
    cp = ctl(agent, "create-policy", "../evil", f"Source={ferretdb.uri}", expect=EXIT_USAGE)
    assert not (agent.policy_dir / "nosource.conf").exists()


def ctl_with_input(agent, data: bytes, *args: str) -> subprocess.CompletedProcess:
    cp = subprocess.run(ctl_command(agent.bus.address, *args), input=data, capture_output=True,
                        timeout=CTL_TIMEOUT, env=ctl_env())
    assert b"runtime error" not in cp.stderr and b"Sanitizer" not in cp.stderr, cp.stderr
    return cp


def test_ctl_set_credential_is_used_without_restart(agent, fresh_db, tmp_path):
    """set-credential writes the agent's credential store (root only, 0600, atomically); a task
    started afterwards finds the secret by name; the secret appears nowhere else."""
    store = tmp_path / "credential-store"
    key = "9f" * 32
    (agent.policy_dir / "sealed.conf").write_text(
        f"[Policy]\nSource={fresh_db.uri}\n\n[Encryption]\nKey=fresh-key\n")
    agent.start(extra_env={"MONGOSNAP_CREDENTIAL_STORE": str(store)})
    # Before: the policy shows its problem, and the snapshot fails, says how to add the key
    # and leaves a failed record.
    path = agent.policy_path("sealed")
    assert "mongosnapctl set-credential fresh-key" in agent.prop(path, POLICY_IFACE, "Problem")
    assert "(problem)" in ctl(agent, "list-policies").stdout
    cp = ctl(agent, "snapshot", "--wait", "sealed", expect=None)
    assert cp.returncode != EXIT_OK
    assert "mongosnapctl set-credential fresh-key" in cp.stderr, cp.stderr
    assert [s["state"] for s in agent.list_snapshots()] == ["failed"]

    cp = ctl_with_input(agent, (key + "\n").encode(), "set-credential", "fresh-key")
    assert cp.returncode == EXIT_OK, cp.stderr
    assert agent.prop(path, POLICY_IFACE, "Problem") == ""  # no restart needed
    assert b"fresh-key stored" in cp.stdout, cp.stdout
    written = store / "fresh-key"
    assert written.read_text() == key  # the newline `echo` adds is not part of the secret
    assert (written.stat().st_mode & 0o777) == 0o600 and (store.stat().st_mode & 0o777) == 0o700
    assert [p.name for p in store.iterdir()] == ["fresh-key"]  # no temporary file left

    seed(fresh_db.client)
    ctl(agent, "snapshot", "--wait", "sealed")
    assert sorted(s["state"] for s in agent.list_snapshots()) == ["completed", "failed"]

    # Bad shapes: nothing written, a clear message, a usage exit.
    for data, args, needle in ((b"", ("set-credential", "empty"), b"no secret"),
                               (b"x", ("set-credential", "../escape"), b"not a credential name"),
                               (b"x" * (70 * 1024), ("set-credential", "huge"), b"64 KiB")):
        cp = ctl_with_input(agent, data, *args)
        assert cp.returncode == EXIT_USAGE, (args, cp.returncode, cp.stderr)
        assert needle in cp.stderr, (args, cp.stderr)
    assert [p.name for p in store.iterdir()] == ["fresh-key"]
    assert not (tmp_path / "escape").exists()
    assert key not in agent.log_text()


def test_a_user_without_a_password_is_said_in_mongosnapctl_words(agent, fresh_db, ferretdb):
    """A Source= or restore target that names a user but no password: the policy shows the
    problem and the refusals name what the operator can use (set-credential, Credential=,
    --credential), never a worker flag."""
    user_uri = fresh_db.uri.replace("mongodb://", "mongodb://backup@", 1)
    agent.write_policy("nopw", user_uri)
    agent.write_policy("fine", fresh_db.uri)
    agent.start()
    problem = agent.prop(agent.policy_path("nopw"), POLICY_IFACE, "Problem")
    assert "user 'backup'" in problem and "Credential=" in problem, problem
    assert "set-credential" in problem and "--password-file" not in problem, problem
    status = ctl(agent, "status").stdout
    assert "PolicyErrors: policy 'nopw': Source= names user 'backup'" in status, status
    cp = ctl(agent, "snapshot", "--wait", "nopw", expect=None)
    assert cp.returncode != EXIT_OK and "Credential=" in cp.stderr, cp.stderr
    failed = [s for s in agent.list_snapshots() if s["policy"] == "nopw"]
    assert [s["state"] for s in failed] == ["failed"] and "Credential=" in failed[0]["error"]
    rows = {r[0]: r for r in table_rows(ctl(agent, "--no-legend", "list-policies").stdout)}
    assert "(problem)" in " ".join(rows["nopw"]) and "(problem)" not in " ".join(rows["fine"])

    seed(fresh_db.client)
    sid = completed_snapshot(agent, "fine")
    target = ferretdb.uri.replace("mongodb://", "mongodb://restorer@", 1)
    cp = ctl(agent, "restore", sid, "--to", target, expect=None)
    assert cp.returncode != EXIT_OK, cp.stdout
    assert "--credential" in cp.stderr and "--password-file" not in cp.stderr, cp.stderr
    assert "user 'restorer'" in cp.stderr, cp.stderr
    # --key-credential reaches the agent's scope check as the D-Bus option does.
    cp = ctl(agent, "restore", sid, "--to", ferretdb.uri, "--key-credential", "unlisted-key",
             expect=None)
    assert cp.returncode == EXIT_ACCESS_DENIED and "KeyCredentials=" in cp.stderr, cp.stderr


def test_ctl_rebuild_wait(agent, fresh_db):
    total = seed(fresh_db.client)
    agent.write_policy("rb", fresh_db.uri)
    agent.start()
    ctl(agent, "stop", "rb")
    cp = ctl(agent, "rebuild", "rb", "--wait")
    assert re.fullmatch(rf"rb-\S+: completed, {total} items, .*\n", cp.stdout), cp.stdout
    assert agent.prop(agent.policy_path("rb"), POLICY_IFACE, "State") == "active"


# ---- --wait, progress, SIGINT, cancel --------------------------------------------------------

def test_ctl_progress_bar_on_a_terminal(agent, ferretdb_factory):
    server = ferretdb_factory("paused")
    total = seed(server.client)
    agent.write_policy("watched", server.uri)
    agent.start()
    with server_paused(server):
        run = PtyRun(ctl_command(agent.bus.address, "snapshot", "watched", "--wait"))
        # The worker hangs on the paused server, so the line is drawn while the task runs:
        # it says what happens (connecting, listing) instead of "0/0 items  0.0 items/s".
        drawn = run.read_until(
            lambda t: re.search(r"\] (starting|connecting|listing collections)\.\.\.  \d+s", t), 30)
        assert drawn, run.text
        (row,) = agent.list_snapshots("watched")
        assert row["state"] in ("queued", "running"), row
        assert agent.prop(row["path"], SNAPSHOT_IFACE, "Phase") in ("", "connect", "prelude")
    assert run.finish() == EXIT_OK, run.text
    text = run.text
    assert "\r" in text  # drawn in place
    assert "0/0 items" not in text and "ETA 0" not in text, text
    assert re.search(rf"watched-\S+: completed, {total} items", text), text
    # Snapshots report bytes (the documents read), so the line can show bytes/s.
    (row,) = agent.list_snapshots("watched")
    assert agent.prop(row["path"], SNAPSHOT_IFACE, "BytesTransferred") > 0
    assert all(len(line) <= PTY_COLUMNS for line in text.replace("\r", "\n").split("\n")), text


def test_ctl_status_shows_running_task(agent, ferretdb_factory):
    server = ferretdb_factory("paused")
    seed(server.client)
    agent.write_policy("slow", server.uri)
    agent.start()
    with server_paused(server):
        sid = ctl(agent, "snapshot", "slow").stdout.strip()
        path = agent.snapshot(sid)["path"]
        agent.wait_snapshot_state(path, ("running",), timeout=20)
        text = ctl(agent, "status", "slow").stdout
        # The server does not answer: the task says what it waits for, not "0/0 items".
        assert re.search(rf"^\s*Task: {re.escape(sid)} \(running\) \[-+\] "
                         r"(starting|connecting|listing collections)\.\.\.  \S+$", text, re.M), text
        status = ctl_json(agent, "status", "slow")
        assert status["running_snapshot"] == path
        assert status["running_task"]["id"] == sid and status["running_task"]["state"] == "running"
    agent.wait_snapshot_state(path, ("completed", "failed"))


def test_ctl_sigint_stops_waiting_not_the_task(agent, ferretdb_factory):
    server = ferretdb_factory("paused")
    seed(server.client)
    agent.write_policy("slow", server.uri)
    agent.start()
    with server_paused(server):
        proc = subprocess.Popen(ctl_command(agent.bus.address, "snapshot", "slow", "--wait"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=ctl_env(), stdin=subprocess.DEVNULL)
        try:
            row = agent.wait_for(lambda: (agent.list_snapshots("slow") or [None])[0],
                                 "the snapshot to be listed", timeout=20)
            agent.wait_snapshot_state(row["path"], ("running",), timeout=20)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == EXIT_INTERRUPTED, (out, err)
        assert f"mongosnapctl log {row['id']} -f" in err, err
        # Waiting stopped; the task did not.
        assert agent.prop(row["path"], SNAPSHOT_IFACE, "State") == "running"
    assert agent.wait_snapshot_state(row["path"], ("completed", "failed")) == "completed"


def background_ctl(agent, *args: str) -> subprocess.Popen:
    return subprocess.Popen(ctl_command(agent.bus.address, *args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ctl_env(),
                            stdin=subprocess.DEVNULL)


def test_ctl_cancel_snapshot_ends_the_wait(agent, ferretdb_factory):
    server = ferretdb_factory("paused")
    seed(server.client)
    agent.write_policy("c", server.uri)
    agent.start()
    with server_paused(server):
        waiting = background_ctl(agent, "snapshot", "c", "--wait")
        try:
            row = agent.wait_for(lambda: (agent.list_snapshots("c") or [None])[0],
                                 "the snapshot to be listed", timeout=20)
            agent.wait_snapshot_state(row["path"], ("running",), timeout=20)
            ctl(agent, "cancel", row["id"])
            # The worker stops on SIGTERM even while its server is paused.
            out, err = waiting.communicate(timeout=60)
        finally:
            if waiting.poll() is None:
                waiting.kill()
    assert waiting.returncode == EXIT_FAILED, (out, err)
    assert err.startswith(f"mongosnapctl: {row['id']}: stopped"), err
    assert agent.prop(row["path"], SNAPSHOT_IFACE, "State") == "stopped"
    # Cancel stops the task, not the policy's schedule; a second cancel has nothing to stop.
    assert agent.prop(agent.policy_path("c"), POLICY_IFACE, "State") == "active"
    cp = ctl(agent, "cancel", row["id"], expect=EXIT_FAILED)
    assert cp.stderr.startswith(f"mongosnapctl: cancel {row['id']}: "), cp.stderr


def test_ctl_cancel_restore(agent, fresh_db, ferretdb_factory):
    seed(fresh_db.client)
    target = ferretdb_factory("target")
    agent.write_policy("src", fresh_db.uri)
    agent.start()
    sid = completed_snapshot(agent, "src")
    with server_paused(target):
        waiting = background_ctl(agent, "restore", sid, "--to", target.uri, "--wait")
        try:
            row = agent.wait_for(lambda: (list_restores(agent) or [None])[0],
                                 "the restore to be listed", timeout=20)
            ctl(agent, "cancel", row["id"])
            out, err = waiting.communicate(timeout=60)
        finally:
            if waiting.poll() is None:
                waiting.kill()
    assert waiting.returncode == EXIT_FAILED, (out, err)
    assert err.startswith(f"mongosnapctl: {row['id']}: cancelled"), err
    (after,) = list_restores(agent)
    assert after["state"] == "cancelled"
    table = parse_table(ctl(agent, "list-restores").stdout)
    assert table["rows"][0][:5] == [row["id"], sid, after["target"], "test-node", "cancelled"]


# ---- snapshots: verify, delete, restore --------------------------------------------------------

def test_ctl_verify_and_delete_snapshot(agent, fresh_db):
    seed(fresh_db.client)
    agent.write_policy("v", fresh_db.uri)
    agent.start()
    sid = completed_snapshot(agent, "v")
    path = agent.snapshot(sid)["path"]

    cp = ctl(agent, "verify", sid, "--wait")
    assert cp.stdout == f"{sid}: verification passed.\n", cp.stdout
    assert agent.prop(path, SNAPSHOT_IFACE, "VerifyState") == "passed"
    assert agent.prop(path, SNAPSHOT_IFACE, "VerifyTime") > 0

    got = ctl_json(agent, "verify", sid, "--wait")
    assert got["id"] == sid and got["verify_state"] == "passed"
    assert got["verify_time_usec"] == agent.prop(path, SNAPSHOT_IFACE, "VerifyTime")

    ctl(agent, "delete-snapshot", sid)
    assert agent.snapshot(sid)["state"] == "deleted"
    assert not list(agent.store.rglob(f"{sid}*"))
    # NotRestorable: only completed snapshots can be verified.
    cp = ctl(agent, "verify", sid, "--wait", expect=EXIT_FAILED)
    assert cp.stderr.startswith(f"mongosnapctl: verify {sid}: "), cp.stderr


def test_ctl_restore_lists_and_hides_password(agent, fresh_db, ferretdb_factory):
    secret = "Rest0re-Secr3t"
    total = seed(fresh_db.client)
    target = ferretdb_factory("target", auth=("restorer", secret))
    agent.write_policy("src", fresh_db.uri)
    agent.start()
    sid = completed_snapshot(agent, "src")
    uri = target.uri_with("restorer", secret)
    assert secret in uri

    with server_paused(target):
        proc = subprocess.Popen(
            ctl_command(agent.bus.address, "restore", sid, "--to", uri, "--ns-from", "shop.*",
                        "--ns-to", "copy.*", "--drop", "--parallel", "2", "--wait"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ctl_env(),
            stdin=subprocess.DEVNULL)
        try:
            agent.wait_for(lambda: list_restores(agent), "the restore to be listed", timeout=30)
            # The password left mongosnapctl's command line once it was parsed.
            cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
            assert secret.encode() not in cmdline and b"--to" in cmdline, cmdline
        except BaseException:
            proc.kill()
            raise
    out, err = proc.communicate(timeout=CTL_TIMEOUT)
    assert proc.returncode == EXIT_OK, (out, err)
    assert re.fullmatch(rf"restore-\S+: completed, {total} items, .*\n", out), out
    assert target.client["copy"]["orders"].count_documents({}) == DOCS_PER_COLLECTION

    (row,) = list_restores(agent)
    assert row["state"] == "completed" and row["snapshot"] == sid
    listing = ctl(agent, "list-restores").stdout
    as_json = ctl(agent, "--json", "list-restores").stdout
    updated = ctl(agent, "--json", "update").stdout
    for text in (listing, as_json, updated, out, err):
        assert secret not in text, text
    table = parse_table(listing)
    assert table["header"] == ["TASK", "SNAPSHOT", "TARGET", "NODE", "STATE", "PROGRESS",
                               "ITEMS", "ELAPSED", "CREATED", "ERROR"]
    assert table["legend"] == "1 restore listed."
    (cells,) = table["rows"]
    assert cells[:7] == [row["id"], sid, row["target"], "test-node", "completed", "100.0%",
                         str(row["items"])], cells
    assert cells[8:] == [local_time(row["create_usec"]), "-"]
    (js,) = json.loads(as_json)
    for key, bus_key in (("id", "id"), ("snapshot", "snapshot"), ("target", "target"),
                         ("task_log", "task_log"), ("items", "items"), ("state", "state"),
                         ("items_total", "items_total"), ("progress", "progress"),
                         ("error", "error"), ("path", "path"), ("create_time_usec", "create_usec"),
                         ("elapsed_usec", "elapsed_usec")):
        assert js[key] == row[bus_key], key
    assert "restorer" in js["target"]
    assert js["node"] == "test-node"
    assert json.loads(updated)["restores"][0]["id"] == row["id"]
    # A restore's id is a task: log and cancel know it.
    ctl(agent, "log", row["id"])
    cp = ctl(agent, "cancel", row["id"], expect=EXIT_FAILED)
    assert cp.stderr.startswith(f"mongosnapctl: cancel {row['id']}: "), cp.stderr


# ---- log, on the system bus of a booted systemd with a real journal --------------------------

DAEMON = BUILD_DIR / "src" / "daemon" / "mongosnapd"
WORKER = BUILD_DIR / "src" / "worker" / "mongosnap-worker"
# Read by dbus when it starts inside (systemd_boot.booted_systemd): root may own the name.
SYSTEMD_BOOT_FILES = {"/etc/dbus-1/system.d/io.mongosnap1.conf": """<!DOCTYPE busconfig PUBLIC
 "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy user="root">
    <allow own="io.mongosnap1"/>
    <allow send_destination="io.mongosnap1"/>
  </policy>
</busconfig>
"""}
JOURNAL_AGENT_UNIT = f"""[Unit]
Requires=dbus.socket
After=dbus.socket

[Service]
Type=notify
BusName={BUS_NAME}
ExecStart={DAEMON} --config=/etc/mongosnap/mongosnap.conf --worker={WORKER}
Environment=ASAN_OPTIONS=detect_leaks=0
TimeoutStartSec=30
"""
JOURNAL_AGENT_CONF = ("[Agent]\nNode=ns-node\nDefaultStore=/var/lib/mongosnap/store\n"
                      "StateDirectory=/var/lib/mongosnap/state\n"
                      "PolicyDirectory=/etc/mongosnap/policies.d\n")
INSIDE_CTL_ENV = {"TZ": "UTC", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
                  "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0"}
FOLLOW_DIR = "/run/ctl-follow"


@pytest.fixture(scope="module")
def journal_agent(booted_systemd: BootedSystemd) -> BootedSystemd:
    """mongosnapd.service on the booted systemd's system bus, its Event Log in its journal;
    the policy "broken" fails at once (a closed port of the namespace's loopback)."""
    sd = booted_systemd
    for p in (DAEMON, WORKER, CTL):
        if not p.is_file():
            pytest.fail(f"not built: {p}", pytrace=False)
    sd.write_file("/etc/mongosnap/mongosnap.conf", JOURNAL_AGENT_CONF)
    sd.write_file("/etc/mongosnap/policies.d/broken.conf", f"[Policy]\nSource={UNREACHABLE_SOURCE}\n")
    sd.run("mkdir", "-p", "/var/lib/mongosnap/store", "/var/lib/mongosnap/state")
    sd.write_file("/run/systemd/system/mongosnapd.service", JOURNAL_AGENT_UNIT)
    sd.systemctl("daemon-reload")
    sd.systemctl("start", "mongosnapd.service", timeout=60)
    return sd


def inside_ctl(sd: BootedSystemd, *args: str, expect: Optional[int] = EXIT_OK):
    """mongosnapctl inside, on the default system bus (no --address)."""
    cp = sd.run(str(CTL), *args, check=False, env=INSIDE_CTL_ENV)
    if expect is not None:
        assert cp.returncode == expect, (args, cp.returncode, cp.stdout, cp.stderr)
    assert "Sanitizer" not in cp.stderr and "runtime error" not in cp.stderr, cp.stderr
    return cp


def inside_getlog(sd: BootedSystemd, match: str) -> list:
    out = sd.busctl("--json=short", "call", BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "GetLog",
                    "ssu", match, "", "0").stdout
    return json.loads(out)["data"][0]


def failed_snapshot_inside(sd: BootedSystemd) -> str:
    """A snapshot of "broken" through mongosnapctl; its id once its failure is in the log."""
    cp = inside_ctl(sd, "snapshot", "broken", "--wait", expect=EXIT_FAILED)
    m = re.match(r"mongosnapctl: (broken-\S+): failed: ", cp.stderr)
    assert m, cp.stderr
    sid = m.group(1)
    sd.wait_for(lambda: any(e[2].get("MONGOSNAP_EVENT") == "task-failed"
                            for e in inside_getlog(sd, f"MONGOSNAP_TASK={sid}")),
                f"task-failed of {sid} in the Event Log", timeout=30)
    return sid


def test_ctl_on_the_system_bus(journal_agent: BootedSystemd):
    sd = journal_agent
    rows = table_rows(inside_ctl(sd, "--no-legend", "list-policies").stdout)
    assert [r[:2] for r in rows] == [["broken", "active"]], rows
    assert json.loads(inside_ctl(sd, "--json", "status").stdout)["node"] == "ns-node"


def test_ctl_log_matches_getlog(journal_agent: BootedSystemd):
    sd = journal_agent
    sid = failed_snapshot_inside(sd)
    for name, match in ((sid, f"MONGOSNAP_TASK={sid}"), ("broken", "MONGOSNAP_POLICY=broken")):
        entries = inside_getlog(sd, match)
        events = [e[2].get("MONGOSNAP_EVENT") for e in entries]
        assert {"task-queued", "task-started", "task-failed"} <= set(events), events

        got = json.loads(inside_ctl(sd, "--json", "log", name).stdout)
        assert [e["cursor"] for e in got] == [e[0] for e in entries]
        assert [e["time_usec"] for e in got] == [e[1] for e in entries]
        assert [e["time"] for e in got] == [iso_time(e[1]) for e in entries]
        for mine, theirs in zip(got, entries):
            fields = theirs[2]
            assert mine["message"] == fields["MESSAGE"] and mine["event"] == fields["MONGOSNAP_EVENT"]
            assert mine["message_id"] == fields["MESSAGE_ID"] and mine["policy"] == "broken"
            assert mine.get("task") == fields.get("MONGOSNAP_TASK")

        lines = inside_ctl(sd, "log", name).stdout.splitlines()
        assert len(lines) == len(entries), lines
        for line, (_cursor, usec, fields) in zip(lines, entries):
            who = fields.get("MONGOSNAP_TASK", fields.get("MONGOSNAP_POLICY"))
            message = fields["MESSAGE"]
            # The task is named once: a message that names it is printed as it is.
            if message.startswith(f"{who}: "):
                message = message[len(who) + 2:]
            want = (f"{local_time(usec)} {message}" if who in message
                    else f"{local_time(usec)} {who}: {message}")
            assert line == want, line
            assert line.count(who) == 1 or message.count(who) > 1, line

        last = json.loads(inside_ctl(sd, "--json", "log", name, "-n", "2").stdout)
        assert [e["cursor"] for e in last] == [e[0] for e in entries[-2:]]
    assert inside_ctl(sd, "log", "broken", "-n", "0").stdout == "-- No entries --\n"
    # A name that is neither a policy nor a task has no entries.
    assert inside_ctl(sd, "log", "nobody-here").stdout == "-- No entries --\n"


def test_ctl_log_follow_until_ctrl_c(journal_agent: BootedSystemd):
    sd = journal_agent
    failed_snapshot_inside(sd)  # something to start from
    before = inside_getlog(sd, "MONGOSNAP_POLICY=broken")
    # mongosnapctl log -f in the background inside; its pid and, at the end, its exit status
    # land in files.
    sd.run("sh", "-c", f'mkdir -p {FOLLOW_DIR}; ( "$0" --json log broken -f -n 1 '
           f'>{FOLLOW_DIR}/out 2>{FOLLOW_DIR}/err & echo $! >{FOLLOW_DIR}/pid; wait $!; '
           f'echo $? >{FOLLOW_DIR}/rc ) >/dev/null 2>&1 &', str(CTL), env=INSIDE_CTL_ENV)
    pid = sd.wait_for(lambda: sd.run("cat", f"{FOLLOW_DIR}/pid", check=False).stdout.strip(),
                      "the follower's pid", timeout=10)

    def followed() -> list:
        text = sd.run("cat", f"{FOLLOW_DIR}/out", check=False).stdout
        # Complete lines only: the last one may be in the middle of being written.
        return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]

    # -n 1: the newest entry first, then what comes.
    assert sd.wait_for(followed, "the first entry", timeout=10)[0]["cursor"] == before[-1][0]
    sid = failed_snapshot_inside(sd)
    sd.wait_for(lambda: any(e.get("task") == sid and e["event"] == "task-failed"
                            for e in followed()), f"{sid} followed", timeout=30)
    sd.run("kill", "-INT", pid)
    rc = sd.wait_for(lambda: sd.run("cat", f"{FOLLOW_DIR}/rc", check=False).stdout.strip(),
                     "the follower to exit", timeout=10)
    assert rc == str(EXIT_OK), sd.read_file(f"{FOLLOW_DIR}/err")
    after = inside_getlog(sd, "MONGOSNAP_POLICY=broken")
    # Every entry once, in order, from the newest old one to the last new one.
    assert [e["cursor"] for e in followed()] == [e[0] for e in after[len(before) - 1:]]


# ---- help ------------------------------------------------------------------------------------

@pytest.mark.parametrize("verb", VERBS)
def test_ctl_verb_help(verb):
    cp = run_ctl(None, verb, "--help")
    assert cp.stdout.startswith(f"mongosnapctl {verb}"), cp.stdout
    assert "Exit status:" in cp.stdout


def test_ctl_global_help_and_version():
    cp = run_ctl(None, "--help")
    for verb in VERBS:
        assert re.search(rf"^  {re.escape(verb)}\b", cp.stdout, re.M), verb
    for code in ("0", "1", "2", "3", "4", "5"):
        assert re.search(rf"^  {code}  ", cp.stdout, re.M), code
    assert run_ctl(None, "--version").stdout.startswith("mongosnapctl ")
    # mongosnapctl's own list of verbs is the one tested here.
    assert set(VERBS) == set(re.findall(r"^  ([a-z-]+)\b", cp.stdout.split("Options:")[0], re.M))


def test_download_addresses_only_for_privileged_callers(tools, tmp_path_factory, fresh_db, minio,
                                                        s3_bucket):
    """A download address reads every document of a snapshot: rows, the property and
    download-url give it to root and group mongosnap only (mongosnapd(8), "Who may do what")."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to call as another user")
    bus_dir = Path(tempfile.mkdtemp(prefix="mongosnapctl-bus-"))
    bus = OpenDBusDaemon(bus_dir).start()
    agent = Agent(tmp_path_factory.mktemp("agent-dl"), bus, tools.require("worker"))
    try:
        (agent.credentials / "s3-access-key-id").write_text(minio.access_key)
        (agent.credentials / "s3-secret-access-key").write_text(minio.secret_key)
        fresh_db.client.shop.items.insert_many([{"i": i} for i in range(10)])
        agent.write_policy("cloud", fresh_db.uri, Store=minio.location(s3_bucket, "dl"))
        agent.start()
        ctl(agent, "snapshot", "cloud", "--wait")
        (row,) = ctl_json(agent, "list-snapshots")
        assert row["download_address"].startswith(minio.endpoint)

        def as_nobody(*args: str) -> subprocess.CompletedProcess:
            cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--",
                   *ctl_command(bus.address, *args)]
            return subprocess.run(cmd, capture_output=True, text=True, timeout=CTL_TIMEOUT,
                                  env=ctl_env(), stdin=subprocess.DEVNULL)

        cp = as_nobody("--json", "list-snapshots")
        assert cp.returncode == EXIT_OK, cp.stderr
        (theirs,) = json.loads(cp.stdout)
        assert theirs["download_address"] == "" and theirs["id"] == row["id"]
        cp = as_nobody("--json", "update")
        assert json.loads(cp.stdout)["snapshots"][0]["download_address"] == ""
        cp = as_nobody("download-url", row["id"])
        assert cp.returncode == EXIT_ACCESS_DENIED, (cp.returncode, cp.stderr)
        assert "permission denied" in cp.stderr and "group mongosnap" in cp.stderr, cp.stderr
        cp = as_nobody("show", row["id"])
        assert cp.returncode == EXIT_OK and "X-Amz-Signature" not in cp.stdout, cp.stdout
        assert "Download" in cp.stdout
    finally:
        agent.close()
        bus.stop()
        shutil.rmtree(bus_dir, ignore_errors=True)


def test_list_snapshots_reads_in_80_columns_and_in_pipes(agent, fresh_db, minio, s3_bucket):
    """The seed's table, as an operator meets it: on an 80-column terminal every line fits,
    the file name is whole, the download address is a marker (never the ~400-character URL),
    and the legend names the columns left out; piped, nothing is cut and no URL appears;
    -l shows the address whole."""
    (agent.credentials / "s3-access-key-id").write_text(minio.access_key)
    (agent.credentials / "s3-secret-access-key").write_text(minio.secret_key)
    fresh_db.client.shop.items.insert_many([{"i": i} for i in range(10)])
    agent.write_policy("nightly", fresh_db.uri, Store=minio.location(s3_bucket, "rs0"),
                       retention_KeepDaily="7")
    agent.write_policy("broken", UNREACHABLE_SOURCE)
    agent.start()
    ctl(agent, "snapshot", "nightly", "--wait")
    ctl(agent, "snapshot", "broken", "--wait", expect=EXIT_FAILED)
    rows = {r["policy"]: r for r in ctl_json(agent, "list-snapshots")}
    good = rows["nightly"]
    file_name = good["file_name"] if "file_name" in good else good["archive_key"].rsplit("/", 1)[1]
    assert len(good["download_address"]) > 200  # what must not flood the table

    run = PtyRun(ctl_command(agent.bus.address, "--no-pager", "list-snapshots"), columns=80)
    assert run.finish() == EXIT_OK
    lines = [ln for ln in run.text.replace("\r", "").split("\n") if ln]
    assert all(len(ln) <= 80 for ln in lines), "\n".join(lines)
    assert lines[0].split()[0] == "TASK", lines
    table = "\n".join(lines)
    legend = " ".join(ln for ln in lines if not re.match(r"(TASK|\S+-\d{8}T\d{6}Z) ", ln))
    assert "not shown for the terminal's width:" in legend, legend
    # What is shown is whole: the task names, and the file name unless the legend names FILE.
    assert good["id"] in table and "…" not in table, table
    assert file_name in table or "FILE" in legend.split("width:")[1], table
    assert minio.endpoint not in table and "X-Amz" not in table

    cp = ctl(agent, "list-snapshots")
    assert file_name in cp.stdout and "X-Amz" not in cp.stdout, cp.stdout
    assert "…" not in cp.stdout  # nothing cut in a pipe
    header = cp.stdout.splitlines()[0].split()
    assert "DL" in header and "EXPIRES" in header, header
    cp = ctl(agent, "list-snapshots", "-l")
    # The address is signed when it is listed, so its date and signature differ between two
    # listings a second apart: what must be whole is the object's address and the signature.
    base = good["download_address"].split("?", 1)[0]
    shown = re.search(re.escape(base) + r"\?\S*X-Amz-Signature=[0-9a-f]{64}(\s|$)", cp.stdout)
    assert shown, cp.stdout


def test_an_orphaned_archive_is_removed_and_logged(journal_agent: BootedSystemd):
    """An archive without a manifest that no agent knows of, two hours old: resync removes it
    and the Event Log says so (orphan-removed)."""
    sd = journal_agent
    orphan = "/var/lib/mongosnap/store/broken/broken-20200101T000000Z.archive.zst"
    sd.run("mkdir", "-p", "/var/lib/mongosnap/store/broken")
    sd.write_file(orphan, b"\x28\xb5\x2f\xfd" + b"\0" * 60)
    sd.run("touch", "-d", "2 hours ago", orphan)
    inside_ctl(sd, "resync")
    sd.wait_for(lambda: not sd.exists(orphan), "the orphan is removed", timeout=30)
    entries = sd.wait_for(
        lambda: [e for e in inside_getlog(sd, "MONGOSNAP_TASK=broken-20200101T000000Z")
                 if e[2].get("MONGOSNAP_EVENT") == "orphan-removed"] or None,
        "the orphan-removed entry", timeout=15)
    fields = entries[0][2]
    assert "had no manifest and was removed" in fields["MESSAGE"], fields
    assert "minutes old" in fields["MONGOSNAP_ERROR"], fields
    # (Its catalog text is checked with the others: test_eventlog_journal.py.)
