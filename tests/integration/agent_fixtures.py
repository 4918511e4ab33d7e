"""Fixtures for the agent's integration tests (test_agent_*.py): a private dbus-daemon, mongosnapd
on it with its files in a temporary directory, and small busctl/dbus-send helpers.

  dbus_bus   (function) a private dbus-daemon allowing everything: .address
  agent      (function) an Agent (not started): .write_policy(), .start(), .stop(), .kill(),
             .busctl(...), .call(...), .prop(...), .wait_for(...); stopped after the test

Import them into a test module with `from agent_fixtures import *  # noqa: F401,F403`.
"""

from __future__ import annotations

import json
import re
import os
import signal
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import pytest

from conftest import BUILD_DIR, _die_with_parent

BUS_NAME = "io.mongosnap1"
MANAGER_PATH = "/io/mongosnap1"
MANAGER_IFACE = "io.mongosnap1.Manager"
POLICY_IFACE = "io.mongosnap1.Policy"
SNAPSHOT_IFACE = "io.mongosnap1.Snapshot"
RESTORE_IFACE = "io.mongosnap1.Restore"

DBUS_START_TIMEOUT = 10.0
AGENT_START_TIMEOUT = 20.0
AGENT_STOP_TIMEOUT = 40.0
CALL_TIMEOUT = 20.0
TASK_TIMEOUT = 90.0
POLL_INTERVAL = 0.1
DAEMON_SOURCE_DIRS = ("src/agent/", "src/bus/", "src/daemon/")

# Snapshot row columns of ListSnapshots (see src/bus/bus.h).
SNAPSHOT_COLUMNS = ("id", "policy", "node", "file_name", "download_address", "task_log",
                    "elapsed_usec", "items", "items_total", "progress", "create_usec",
                    "expire_usec", "bytes", "state", "error", "path", "verify_state", "seq",
                    "origin", "kept_by", "expire_projected_usec", "future_dated")
POLICY_COLUMNS = ("name", "path", "state", "source", "schedule", "store", "last_run",
                  "last_result", "next_run", "problem")

DBUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


class DBusDaemon:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.socket = workdir / "bus"
        self.config = workdir / "bus.conf"
        self.proc: Optional[subprocess.Popen] = None
        self.address = f"unix:path={self.socket}"

    def start(self) -> "DBusDaemon":
        self.config.write_text(DBUS_CONFIG.format(socket=self.socket))
        self.proc = subprocess.Popen(
            _die_with_parent(["dbus-daemon", f"--config-file={self.config}", "--nofork",
                              "--print-address"]),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + DBUS_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.socket.exists():
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"dbus-daemon exited: {self.proc.stdout.read()}")
            time.sleep(0.02)
        raise RuntimeError("dbus-daemon did not create its socket")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


class NotifyListener:
    """A bound SOCK_DGRAM socket for NOTIFY_SOCKET, collecting every sd_notify message."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(POLL_INTERVAL)
        self.messages: List[Dict[str, str]] = []
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._lock:
                self.messages.append(fields)

    def all(self) -> List[Dict[str, str]]:
        with self._lock:
            return list(self.messages)

    def wait_for(self, key: str, value: Optional[str] = None, timeout: float = AGENT_START_TIMEOUT,
                 start: int = 0) -> Dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.all()[start:]:
                if key in m and (value is None or m[key] == value):
                    return m
            time.sleep(POLL_INTERVAL / 2)
        raise AssertionError(f"no sd_notify {key}={value or '*'} within {timeout}s; got {self.all()}")

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        self._thread.join(timeout=2)


class BusError(Exception):
    def __init__(self, name: str, message: str):
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


class Agent:
    """mongosnapd on a private bus with its configuration, policies, state and store in workdir."""

    def __init__(self, workdir: Path, bus: DBusDaemon, worker: Path):
        self.workdir = workdir
        self.bus = bus
        self.worker = worker
        self.binary = BUILD_DIR / "src" / "daemon" / "mongosnapd"
        self.policy_dir = workdir / "policies.d"
        self.state_dir = workdir / "state"
        self.store = workdir / "store"
        self.credentials = workdir / "credentials"
        self.config = workdir / "mongosnap.conf"
        self.logfile = workdir / "mongosnapd.log"
        for d in (self.policy_dir, self.store, self.credentials):
            d.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            "[Agent]\n"
            "Node=test-node\n"
            f"DefaultStore={self.store}\n"
            f"WorkerPath={self.worker}\n"
            f"StateDirectory={self.state_dir}\n"
            f"PolicyDirectory={self.policy_dir}\n"
            # The credentials a restore may name (credential scopes, mongosnapd(8)); the tests'
            # restores use these names.
            "\n[Restore]\n"
            "Credentials=missing-cred restore-target\n"
            # old encryption keys after a rotation (test_agent_encryption.py)
            "KeyCredentials=backup-key no-such-key\n")
        self.proc: Optional[subprocess.Popen] = None
        self.notify: Optional[NotifyListener] = None
        self._starts = 0
        self.extra_args: List[str] = []  # more mongosnapd options (e.g. --verbose)

    # ---- files ----
    def write_policy(self, name: str, source: str, **keys: str) -> Path:
        """policies.d/NAME.conf with Source= and any other [Policy] keys (KeepLast etc. go in
        [Retention] when given as retention_KeepLast)."""
        policy = [f"Source={source}"] + [f"{k}={v}" for k, v in keys.items()
                                         if not k.startswith("retention_")]
        retention = [f"{k[len('retention_'):]}={v}" for k, v in keys.items()
                     if k.startswith("retention_")]
        text = "[Policy]\n" + "\n".join(policy) + "\n"
        if retention:
            text += "\n[Retention]\n" + "\n".join(retention) + "\n"
        path = self.policy_dir / f"{name}.conf"
        path.write_text(text)
        return path

    # ---- process ----
    def start(self, wait_ready: bool = True, extra_env: Optional[Dict[str, str]] = None) -> "Agent":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        if not self.binary.exists():
            pytest.fail(f"mongosnapd is not built: {self.binary}", pytrace=False)
        self._starts += 1
        if self.notify:
            self.notify.close()
        notify_path = self.workdir / f"notify-{self._starts}"
        self.notify = NotifyListener(notify_path)
        env = dict(os.environ)
        env.update({
            "DBUS_SYSTEM_BUS_ADDRESS": self.bus.address,
            "NOTIFY_SOCKET": str(notify_path),
            "CREDENTIALS_DIRECTORY": str(self.credentials),
            "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0",
        })
        env.pop("WATCHDOG_USEC", None)
        env.pop("WATCHDOG_PID", None)
        env.update(extra_env or {})
        with open(self.logfile, "ab") as log:
            log.write(f"=== start {self._starts}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                _die_with_parent([str(self.binary), f"--config={self.config}", *self.extra_args,
                                  f"--worker={self.worker}"]),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
        if wait_ready:
            try:
                self.notify.wait_for("READY", "1")
            except AssertionError:
                raise AssertionError(f"mongosnapd not ready; log:\n{self.log_text()}")
        return self

    def stop(self, timeout: float = AGENT_STOP_TIMEOUT) -> int:
        """SIGTERM and wait; returns the exit status."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            raise AssertionError(f"mongosnapd did not stop within {timeout}s; log:\n{self.log_text()}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def wait_log(self, needle: str, timeout: float = 20.0) -> None:
        """Wait until the agent's output holds needle."""
        deadline = time.monotonic() + timeout
        while needle not in self.log_text():
            assert time.monotonic() < deadline, f"not logged: {needle!r}\n{self.log_text()[-3000:]}"
            time.sleep(0.05)

    def log_text(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.stop()
        finally:
            if self.notify:
                self.notify.close()

    # ---- bus ----
    def busctl(self, *args: str, check: bool = True, timeout: float = CALL_TIMEOUT) -> subprocess.CompletedProcess:
        cmd = ["busctl", f"--address={self.bus.address}", *args]
        cp = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
        if check and cp.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({cp.returncode}): {cp.stderr}\n"
                                 f"mongosnapd log:\n{self.log_text()[-5000:]}")
        return cp

    def call(self, path: str, iface: str, method: str, signature: str = "", *args) -> list:
        """Call through busctl --json=short; returns the reply's data list. A D-Bus error raises
        BusError (its name is read with dbus-send, which prints it, unlike busctl)."""
        cmd = ["--json=short", "call", BUS_NAME, path, iface, method]
        if signature:
            cmd += [signature, *map(str, args)]
        cp = self.busctl(*cmd, check=False)
        if cp.returncode != 0:
            raise self._error_of(path, iface, method, signature, args, cp.stderr)
        return json.loads(cp.stdout)["data"] if cp.stdout.strip() else []

    def _error_of(self, path, iface, method, signature, args, busctl_stderr) -> BusError:
        """Repeat a failed call with dbus-send to learn the error's name."""
        types = {"s": "string", "b": "boolean", "u": "uint32", "i": "int32", "t": "uint64",
                 "d": "double", "o": "objpath"}
        dargs = []
        if signature == "a{ss}":  # busctl form: COUNT K1 V1 K2 V2 ...
            pairs = [str(a) for a in args[1:]]
            return self._dbus_send_error(path, iface, method, [f"dict:string:string:{','.join(pairs)}"],
                                         busctl_stderr)
        for t, a in zip(signature, args):
            if t not in types:
                return BusError("?", busctl_stderr.strip())
            v = str(a).lower() if t == "b" else str(a)
            dargs.append(f"{types[t]}:{v}")
        return self._dbus_send_error(path, iface, method, dargs, busctl_stderr)

    def _dbus_send_error(self, path, iface, method, dargs, busctl_stderr) -> BusError:
        cp = subprocess.run(["dbus-send", f"--bus={self.bus.address}", "--print-reply",
                             f"--dest={BUS_NAME}", path, f"{iface}.{method}", *dargs],
                            capture_output=True, text=True, timeout=CALL_TIMEOUT)
        line = cp.stderr.strip().splitlines()[0] if cp.stderr.strip() else ""
        if cp.returncode != 0 and line.startswith("Error "):
            name, _, msg = line[len("Error "):].partition(": ")
            return BusError(name, msg)
        return BusError("?", f"{busctl_stderr.strip()} / dbus-send: {cp.stdout}{cp.stderr}")

    def prop(self, path: str, iface: str, name: str):
        cp = self.busctl("--json=short", "get-property", BUS_NAME, path, iface, name)
        return json.loads(cp.stdout)["data"]

    def list_policies(self) -> List[dict]:
        (rows,) = self.call(MANAGER_PATH, MANAGER_IFACE, "ListPolicies")
        return [dict(zip(POLICY_COLUMNS, r)) for r in rows]

    def list_snapshots(self, policy: str = "") -> List[dict]:
        (rows,) = self.call(MANAGER_PATH, MANAGER_IFACE, "ListSnapshots", "s", policy)
        return [dict(zip(SNAPSHOT_COLUMNS, r)) for r in rows]

    def snapshot(self, snapshot_id: str) -> dict:
        rows = [s for s in self.list_snapshots() if s["id"] == snapshot_id]
        assert rows, f"snapshot {snapshot_id} not listed"
        return rows[0]

    def policy_path(self, name: str) -> str:
        rows = [p for p in self.list_policies() if p["name"] == name]
        assert rows, f"policy {name} not listed: {self.list_policies()}"
        return rows[0]["path"]

    def take_snapshot(self, policy: str) -> str:
        (path,) = self.call(self.policy_path(policy), POLICY_IFACE, "TakeSnapshot")
        return path

    def wait_for(self, predicate: Callable[[], object], what: str, timeout: float = TASK_TIMEOUT):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"mongosnapd exited ({self.proc.returncode}) waiting for "
                                     f"{what}; log:\n{self.log_text()[-5000:]}")
            time.sleep(POLL_INTERVAL)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; log:\n"
                             f"{self.log_text()[-5000:]}")

    def wait_snapshot_state(self, path: str, states: Sequence[str], timeout: float = TASK_TIMEOUT) -> str:
        def done():
            s = self.prop(path, SNAPSHOT_IFACE, "State")
            return s if s in states else None
        return self.wait_for(done, f"{path} in {states}", timeout)


@pytest.fixture
def dbus_bus(tmp_path_factory: pytest.TempPathFactory):
    bus = DBusDaemon(tmp_path_factory.mktemp("dbus")).start()
    try:
        yield bus
    finally:
        bus.stop()


@pytest.fixture
def agent(dbus_bus: DBusDaemon, tools, tmp_path_factory: pytest.TempPathFactory):
    a = Agent(tmp_path_factory.mktemp("agent"), dbus_bus, tools.require("worker"))
    try:
        yield a
    finally:
        a.close()
        # Captured output is shown only when the test fails.
        print(f"--- mongosnapd log ({a.logfile}) ---\n{a.log_text()[-8000:]}")
    # The daemon runs under ASan/UBSan in the test build; its own reports fail the test (the
    # worker shares the log, so only reports that point into the daemon's sources count).
    assert not sanitizer_reports(a.log_text()), "\n\n".join(sanitizer_reports(a.log_text()))


SANITIZER_REPORT_LINES = 80


def sanitizer_reports(log: str) -> List[str]:
    """UBSan lines and ASan/LSan report blocks that point into the daemon's own sources."""
    lines = log.splitlines()
    reports = []
    for i, line in enumerate(lines):
        if "runtime error" in line and any(d in line for d in DAEMON_SOURCE_DIRS):
            reports.append(line)
        elif "ERROR: " in line and "Sanitizer" in line:
            block = lines[i:i + SANITIZER_REPORT_LINES]
            if any(d in b for b in block for d in DAEMON_SOURCE_DIRS):
                reports.append("\n".join(block))
    return reports


# ---- helpers shared by the agent's test modules ----

def decode(path: str) -> str:
    """The id in an object path (sd_bus_path_encode escapes every other byte as _XX)."""
    return re.sub(r"_([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), path.rsplit("/", 1)[1])


@contextmanager
def server_paused(server):
    """SIGSTOP the server so a worker talking to it hangs until the block ends (SIGCONT)."""
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)


def gdbus(agent, path: str, iface: str, method: str, *args: str) -> str:
    """A call with GVariant-text arguments (gdbus handles a{sv}, which busctl makes awkward);
    a D-Bus error raises BusError with its name."""
    cp = subprocess.run(
        ["gdbus", "call", "--address", agent.bus.address, "--dest", "io.mongosnap1",
         "--object-path", path, "--method", f"{iface}.{method}", *args],
        capture_output=True, text=True, timeout=CALL_TIMEOUT, stdin=subprocess.DEVNULL)
    if cp.returncode != 0:
        m = re.search(r"GDBus\.Error:([\w.]+): (.*)", cp.stderr, re.S)
        if m:
            raise BusError(m.group(1), m.group(2).strip())
        raise AssertionError(f"gdbus failed: {cp.stderr}")
    return cp.stdout.strip()


def start_restore(agent, snapshot: str, target: str, options: str = "@a{sv} {}") -> str:
    out = gdbus(agent, MANAGER_PATH, MANAGER_IFACE, "StartRestore", snapshot, target, options)
    m = re.match(r"\(objectpath '([^']+)',\)", out)
    assert m, out
    return m.group(1)
