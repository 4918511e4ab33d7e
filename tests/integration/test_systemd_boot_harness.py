"""The booted-systemd harness's own promise: a boot's canary in the host's /tmp (made to see
whether the namespace leaked into the host, systemd_boot.py) is removed by another run's
stale-canary sweep only when no live run holds it, whatever PID namespace that run is in.

It once went wrong: canaries carried their owner's PID, and a sweep removed those whose PID it
could not see in /proc, so a run in another PID namespace (or one whose PID number was reused)
lost its live canary and its teardown reported `host_changes: [... was removed]`. Canaries are
now held with an flock; these tests run in a directory of their own, never the host's /tmp.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import systemd_boot
from systemd_boot import _remove_stale_canaries, make_canary

HOLDER = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import systemd_boot
path, fd = systemd_boot.make_canary(Path(sys.argv[2]))
print(path, flush=True)
sys.stdin.read()          # hold the canary until told to go
"""


def holder(tmp: Path, *prefix: str) -> subprocess.Popen:
    proc = subprocess.Popen([*prefix, sys.executable, "-c", HOLDER,
                             str(Path(systemd_boot.__file__).parent), str(tmp)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    assert line, "the holder made no canary"
    proc.path = Path(line)
    return proc


def test_a_live_canary_survives_a_sweep_from_another_pid_namespace(tmp_path):
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare for a PID namespace")
    # A run in its own PID namespace: its PID means nothing out here (the old scheme's flaw).
    inside = holder(tmp_path, "unshare", "--pid", "--fork", "--mount-proc", "--")
    here = holder(tmp_path)
    try:
        assert _remove_stale_canaries(tmp_path) == []
        assert inside.path.read_bytes() == b"host" and here.path.read_bytes() == b"host"
    finally:
        for p in (inside, here):
            p.stdin.close()
            p.wait(timeout=10)
    # Their owners are gone: now they are stale, and go.
    assert sorted(_remove_stale_canaries(tmp_path)) == sorted([inside.path, here.path])
    assert list(tmp_path.iterdir()) == []


def test_canaries_being_made_are_never_swept(tmp_path):
    """Property: while one thread makes canaries (and keeps them) and another sweeps without
    pause, no canary a live owner holds is ever removed; those it let go all are."""
    held, stop = [], threading.Event()

    def sweeper():
        while not stop.is_set():
            _remove_stale_canaries(tmp_path)

    t = threading.Thread(target=sweeper)
    t.start()
    try:
        deadline = time.monotonic() + 3.0
        made = 0
        while time.monotonic() < deadline and made < 2000:
            path, fd = make_canary(tmp_path)
            made += 1
            if made % 2:
                held.append((path, fd))
            else:
                os.close(fd)  # its owner is gone at once: stale
            for p, _ in held[-5:]:
                assert p.exists(), f"a held canary was swept: {p}"
    finally:
        stop.set()
        t.join()
    assert made >= 100, made
    _remove_stale_canaries(tmp_path)
    left = sorted(tmp_path.glob(systemd_boot.CANARY_GLOB))
    assert left == sorted(p for p, _ in held), (len(left), len(held))
    assert not list(tmp_path.glob("mongosnap-boot-new-*"))
    for _, fd in held:
        os.close(fd)
