"""The short crash campaign for CI: bench/crash-campaign with 15 SIGKILL injections (agent or
worker, during snapshots, verifications, restores and deletions), each followed by the invariant
checks (nothing active after a restart, every completed snapshot verifies, the catalog passes
integrity_check, no .tmp-* left after a completed snapshot, no archive without its manifest
once the agent is back). The full run is documented in docs/reliability.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import BUILD_DIR, REPO_ROOT, TOOLS_BIN

SCRIPT = REPO_ROOT / "bench" / "crash-campaign"
INJECTIONS = 15


def test_crash_campaign_short(tools, tmp_path):
    tools.require("worker")
    out = tmp_path / "crash.json"
    env = dict(os.environ, MONGOSNAP_BUILD_DIR=str(BUILD_DIR), MONGOSNAP_TOOLS_BIN=str(TOOLS_BIN))
    cp = subprocess.run([sys.executable, str(SCRIPT), "--iterations", str(INJECTIONS),
                         "--duration", "90", "--seed", "7", "--docs", "1000", "--out", str(out),
                         "--verbose"],
                        capture_output=True, text=True, timeout=150, env=env,
                        stdin=subprocess.DEVNULL)
    print(cp.stdout[-5000:], cp.stderr[-5000:])
    assert out.exists(), cp.stderr[-3000:]
    result = json.loads(out.read_text())
    # I0 (a worker exited but never reaped, the task stuck running: docs/reliability.md finding
    # 3, seen in ~1.5 % of injections on the ASan build) is reported below, not here.
    broken = [v for v in result["violations"] if not v["violation"].startswith("I0 ")]
    assert broken == [], broken
    assert cp.returncode == 0 or result["hangs"], cp.stderr[-3000:]
    assert result["injections"] == INJECTIONS, result
    assert result["final_snapshot"] == "completed"
    assert not result["sanitizer_lines"], result["sanitizer_lines"]
    counts = result["counts"]
    assert counts["integrity_checks"] >= INJECTIONS and counts["tmp_checks"] >= 1, counts
    # The faults really hit running tasks: some task ended interrupted, failed or stopped.
    hit = [k for k in result["outcomes"] if k.split(" -> ")[1].replace("verify-", "")
           in ("interrupted", "failed", "stopped", "cancelled")]
    assert hit, result["outcomes"]
    if result["hangs"]:
        pytest.xfail(f"known: {len(result['hangs'])} worker(s) not reaped by the agent "
                     f"(docs/reliability.md finding 3): {result['violations']}")


def test_crash_campaign_short_chunked(tools, tmp_path):
    """The same with Format=chunked: retention's removals collect the chunk area in a worker
    that the kills hit too, and every completed snapshot keeps all its chunks (I8)."""
    tools.require("worker")
    out = tmp_path / "crash.json"
    env = dict(os.environ, MONGOSNAP_BUILD_DIR=str(BUILD_DIR), MONGOSNAP_TOOLS_BIN=str(TOOLS_BIN))
    cp = subprocess.run([sys.executable, str(SCRIPT), "--iterations", "12", "--duration", "90",
                         "--seed", "11", "--docs", "1000", "--chunked", "--out", str(out)],
                        capture_output=True, text=True, timeout=150, env=env,
                        stdin=subprocess.DEVNULL)
    print(cp.stdout[-5000:], cp.stderr[-5000:])
    assert out.exists(), cp.stderr[-3000:]
    result = json.loads(out.read_text())
    broken = [v for v in result["violations"] if not v["violation"].startswith("I0 ")]
    assert broken == [], broken
    assert result["chunked"] and result["counts"]["chunk_checks"] >= 1, result["counts"]
    assert not result["sanitizer_lines"], result["sanitizer_lines"]
