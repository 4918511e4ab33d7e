"""Disk full: the local store and the agent's state directory on a small tmpfs, mounted in a private
mount namespace (`unshare --mount`, held open by a `sleep`; commands run in it with nsenter and
its files are read through /proc/PID/root), so nothing leaks into the host's mount table.

- the worker's snapshot into a full store fails cleanly (exit 1, "No space left on device"),
  leaves no manifest and no .tmp-* file; after space is freed the next snapshot succeeds and
  verifies;
- the agent with its state directory full: a snapshot whose catalog writes fail gives a clear
  error and the agent either keeps serving or exits with a message (no crash, no signal); after
  space returns the agent (restarted if it exited) takes a snapshot and its catalog passes
  sqlite's integrity check.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from agent_fixtures import *  # noqa: F401,F403
from agent_fixtures import MANAGER_IFACE, MANAGER_PATH, SNAPSHOT_IFACE

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nsenter"),
    reason="needs root, unshare and nsenter for a private tmpfs")

TIMEOUT = 60
FINAL = ("completed", "failed", "interrupted", "stopped")


class SmallFs:
    """A tmpfs of `size` at `path`, visible only inside a private mount namespace."""

    def __init__(self, path: Path, size: str):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
             f"mount -t tmpfs -o size={size},mode=0700 tmpfs '{self.path}' && echo mounted "
             "&& exec sleep 300"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline().strip()
        if line != "mounted":
            self.proc.kill()
            pytest.skip(f"cannot mount a tmpfs in a private namespace: {self.proc.stderr.read()}")

    def view(self, rel: str = "") -> Path:
        """The path as seen inside the namespace."""
        return Path(f"/proc/{self.proc.pid}/root") / str(self.path).lstrip("/") / rel

    def prefix(self) -> list:
        return ["nsenter", f"--mount=/proc/{self.proc.pid}/ns/mnt", "--"]

    def run(self, *cmd, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([*self.prefix(), *map(str, cmd)], capture_output=True, text=True,
                              timeout=TIMEOUT, stdin=subprocess.DEVNULL, **kw)

    def fill(self, leave: int = 0) -> None:
        """A ballast file taking all the space but `leave` bytes."""
        st = os.statvfs(self.view())
        free = st.f_bavail * st.f_frsize
        with open(self.view("ballast"), "wb") as f:
            f.write(b"\0" * max(0, free - leave))

    def free(self) -> None:
        self.view("ballast").unlink(missing_ok=True)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


def incompressible(client, docs: int = 400, size: int = 8192) -> None:
    client.big.blobs.insert_many([{"i": i, "blob": os.urandom(size)} for i in range(docs)])


def test_worker_store_full(tools, fresh_db, tmp_path):
    incompressible(fresh_db.client)  # ~3.3 MB of random bytes
    uri = tmp_path / "uri"
    uri.write_text(fresh_db.uri)
    worker = tools.require("worker")
    fs = SmallFs(tmp_path / "store", "8m")
    try:
        fs.fill(leave=1 << 20)  # 1 MiB left: the archive cannot fit
        cp = fs.run(worker, "snapshot", "--uri-file", uri, "--store", fs.path, "--prefix", "p",
                    "--name", "s1", "--compression", "none")
        assert cp.returncode == 1, (cp.returncode, cp.stderr)
        assert "No space left on device" in cp.stderr, cp.stderr
        assert "s1" in cp.stderr  # names what it could not write
        left = sorted(str(p.relative_to(fs.view())) for p in fs.view().rglob("*") if p.is_file())
        assert left == ["ballast"], f"partial objects left behind: {left}"

        # Space returns: the same snapshot name succeeds and verifies.
        fs.free()
        cp = fs.run(worker, "snapshot", "--uri-file", uri, "--store", fs.path, "--prefix", "p",
                    "--name", "s1", "--compression", "none")
        assert cp.returncode == 0, cp.stderr
        cp = fs.run(worker, "verify", "--store", fs.path, "--snapshot", "p/s1")
        assert cp.returncode == 0, cp.stderr
        names = sorted(p.name for p in fs.view("p").iterdir())
        assert names == ["s1.archive", "s1.manifest.json"] or \
            (len(names) == 2 and "s1.manifest.json" in names), names

        # Full again while the manifest is being written (a few KiB left): still nothing partial.
        fs.fill(leave=64 << 10)
        cp = fs.run(worker, "snapshot", "--uri-file", uri, "--store", fs.path, "--prefix", "p",
                    "--name", "s2", "--compression", "zstd")
        assert cp.returncode == 1 and "No space left" in cp.stderr, (cp.returncode, cp.stderr)
        assert not [p for p in fs.view("p").iterdir() if "s2" in p.name or ".tmp-" in p.name]
        # The earlier snapshot is untouched.
        assert fs.run(worker, "verify", "--store", fs.path, "--snapshot", "p/s1").returncode == 0
    finally:
        fs.close()


def test_agent_state_directory_full(agent, fresh_db, tmp_path):
    fresh_db.client.shop.orders.insert_many([{"i": i, "pad": "x" * 200} for i in range(300)])
    fs = SmallFs(agent.state_dir, "2m")
    wrapper = tmp_path / "mongosnapd-in-ns"
    wrapper.write_text(f"#!/bin/sh\nexec {' '.join(fs.prefix())} {agent.binary} \"$@\"\n")
    wrapper.chmod(0o755)
    agent.binary = wrapper
    agent.write_policy("p", fresh_db.uri)
    try:
        agent.start()
        first = agent.take_snapshot("p")
        assert agent.wait_snapshot_state(first, FINAL) == "completed"

        fs.fill(leave=0)
        outcome = ""
        try:
            path = agent.take_snapshot("p")
            state = agent.wait_snapshot_state(path, FINAL, timeout=TIMEOUT)
            outcome = f"TakeSnapshot accepted, final state {state}"
        except Exception as e:  # noqa: BLE001 - the refusal itself is what is reported
            outcome = f"refused or agent gone: {str(e).splitlines()[0][:300]}"
        time.sleep(1)
        alive = agent.proc.poll() is None
        log = agent.log_text()
        print(f"state directory full: {outcome}; agent alive: {alive}; exit {agent.proc.returncode}")
        if not alive:
            # Exited: cleanly, not by a signal, and saying why.
            assert agent.proc.returncode > 0, agent.proc.returncode
            assert "No space left" in log or "full" in log, log[-3000:]
        else:
            agent.call(MANAGER_PATH, MANAGER_IFACE, "ListPolicies")
            # Either the refusal names the full state directory, or the task ran and its
            # failure (or success) is recorded once space is back.
            assert ("disk is full" in outcome and "state directory" in outcome) or \
                "TakeSnapshot accepted" in outcome, (outcome, log[-3000:])

        # Space returns: (restarted if needed) a snapshot completes and the catalog is sound.
        fs.free()
        if not alive:
            agent.start()
        path = agent.take_snapshot("p")
        assert agent.wait_snapshot_state(path, FINAL) == "completed", \
            agent.prop(path, SNAPSHOT_IFACE, "Error")
        assert agent.prop(first, SNAPSHOT_IFACE, "State") == "completed"
        agent.stop()
        assert fs.view("mongosnap.db").is_file()
        cp = fs.run("sqlite3", fs.path / "mongosnap.db", "PRAGMA integrity_check")
        assert cp.stdout.strip() == "ok", (cp.stdout, cp.stderr)
    finally:
        agent.close()
        fs.close()


def test_agent_state_directory_fills_during_a_snapshot(agent, fresh_db, tmp_path):
    """The state directory fills while a snapshot runs (its source held up): the completion
    cannot be recorded. The agent must not crash; after space returns and a restart, the
    snapshot is listed either completed (and then it verifies) or interrupted/failed, never
    running, and the catalog is sound."""
    import signal
    fresh_db.client.shop.orders.insert_many([{"i": i, "pad": "x" * 200} for i in range(300)])
    fs = SmallFs(agent.state_dir, "2m")
    wrapper = tmp_path / "mongosnapd-in-ns"
    wrapper.write_text(f"#!/bin/sh\nexec {' '.join(fs.prefix())} {agent.binary} \"$@\"\n")
    wrapper.chmod(0o755)
    agent.binary = wrapper
    agent.write_policy("p", fresh_db.uri)
    try:
        agent.start()
        os.kill(fresh_db.proc.pid, signal.SIGSTOP)
        try:
            path = agent.take_snapshot("p")
            agent.wait_snapshot_state(path, ("running",), timeout=20)
            fs.fill(leave=0)
        finally:
            os.kill(fresh_db.proc.pid, signal.SIGCONT)
        time.sleep(3)  # the worker finishes; the agent tries to record it
        alive = agent.proc.poll() is None
        state = agent.prop(path, SNAPSHOT_IFACE, "State") if alive else "(agent exited)"
        print(f"state directory filled during a snapshot: agent alive {alive}, exit "
              f"{agent.proc.returncode}, listed state {state}")
        if not alive:
            assert agent.proc.returncode > 0, f"killed by a signal: {agent.proc.returncode}"
        fs.free()
        sid = path.rsplit("/", 1)[1].replace("_2d", "-")
        if alive:
            # The agent writes the refused record again until the catalog takes it.
            deadline = time.monotonic() + 20
            while True:
                cp = fs.run("sqlite3", fs.path / "mongosnap.db",
                            f"SELECT state FROM snapshots WHERE id = '{sid}'")
                if cp.stdout.strip() == state or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            print(f"catalog once space returned, without a restart: {cp.stdout.strip()}")
            assert cp.stdout.strip() == state, (cp.stdout, cp.stderr, agent.log_text()[-3000:])
            agent.stop()
        agent.start()
        # After a restart the records of tasks left unfinished are checked against the store.
        agent.wait_for(lambda: agent.prop(path, SNAPSHOT_IFACE, "State") != "interrupted"
                       or not (agent.store / "p" / f"{sid}.manifest.json").exists(),
                       "the start-up check of the store", timeout=20)
        state = agent.prop(path, SNAPSHOT_IFACE, "State")
        print(f"after space returned and a restart: {state}; store holds "
              f"{sorted(p.name for p in (agent.store / 'p').iterdir())}")
        assert state in ("completed", "interrupted", "failed"), state
        if (agent.store / "p" / f"{sid}.manifest.json").exists():
            assert state == "completed", state
        if state == "completed":
            cp = subprocess.run([str(agent.worker), "verify", "--store", str(agent.store),
                                 "--snapshot", f"p/{sid}"], capture_output=True, text=True,
                                timeout=TIMEOUT)
            assert cp.returncode == 0, cp.stderr
        path2 = agent.take_snapshot("p")
        assert agent.wait_snapshot_state(path2, FINAL) == "completed"
        agent.stop()
        cp = fs.run("sqlite3", fs.path / "mongosnap.db", "PRAGMA integrity_check")
        assert cp.stdout.strip() == "ok", (cp.stdout, cp.stderr)
    finally:
        agent.close()
        fs.close()
