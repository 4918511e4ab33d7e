"""Chunked snapshots through mongosnapd: a policy with Format=chunked takes them (the worker
gets --format chunked), the second stores only what changed, retention's removal collects the
chunks no kept snapshot names, listings and show offer the export command instead of a download
address, and `mongosnapctl export` streams a stock archive (through a file descriptor over
D-Bus) that mongorestore restores; a policy with Format=chunked and Compression=gzip is refused
with the reason."""

from __future__ import annotations

import json
import re
import subprocess

from agent_fixtures import *  # noqa: F401,F403
from agent_fixtures import MANAGER_IFACE, MANAGER_PATH, SNAPSHOT_IFACE, gdbus
from helpers import data_digest
from test_agent_restore import completed_snapshot, decode, seed
from test_ctl import ctl, ctl_command, ctl_env


def chunks(agent, policy):
    root = agent.store / "_chunks" / policy
    return sorted(p.name for p in root.glob("??/*")) if root.exists() else []


def test_chunked_policy_retention_and_export(agent, fresh_db, ferretdb_factory, tmp_path):
    seed(fresh_db.client)
    # one collection at a time: parallel collections interleave in the order they finish, and on
    # a dataset this small (five chunks) another order is another stream, all of it new
    agent.write_policy("dedup", fresh_db.uri, Format="chunked", ParallelCollections="1",
                       retention_KeepLast="1")
    agent.start()
    snap1 = completed_snapshot(agent, "dedup")
    sid1 = decode(snap1)
    m1 = json.loads((agent.store / "dedup" / f"{sid1}.manifest.json").read_text())
    assert m1["archive"]["format"] == "chunked"
    assert agent.prop(snap1, SNAPSHOT_IFACE, "ArchiveKey") == f"dedup/{sid1}.index"
    first = set(chunks(agent, "dedup"))
    assert len(first) == m1["archive"]["chunks"]["stored"] > 0

    # the second snapshot of a slightly changed database, then retention (KeepLast=1) removes
    # the first and collects what only it named
    fresh_db.client.shop.orders.update_one({"i": 7}, {"$set": {"changed": True}})
    snap2 = completed_snapshot(agent, "dedup")
    sid2 = decode(snap2)
    m2 = json.loads((agent.store / "dedup" / f"{sid2}.manifest.json").read_text())
    assert m2["archive"]["chunks"]["stored"] < m1["archive"]["chunks"]["stored"]
    agent.wait_for(lambda: not (agent.store / "dedup" / f"{sid1}.manifest.json").exists(),
                   "retention removing the first snapshot")
    agent.wait_log("garbage collection of 'dedup'")
    removed = re.search(r"garbage collection of 'dedup': (\d+) of (\d+) chunks removed", agent.log_text())
    assert removed and int(removed.group(1)) > 0, agent.log_text()[-3000:]
    # every chunk left is one the kept snapshot names: it reads whole
    after = set(chunks(agent, "dedup"))
    assert len(after) == int(removed.group(2)) - int(removed.group(1))
    gdbus(agent, snap2, SNAPSHOT_IFACE, "Verify")
    agent.wait_for(lambda: agent.prop(snap2, SNAPSHOT_IFACE, "VerifyState") in ("passed", "failed"),
                   "verification")
    assert agent.prop(snap2, SNAPSHOT_IFACE, "VerifyState") == "passed", \
        agent.prop(snap2, SNAPSHOT_IFACE, "VerifyError")

    # listings offer the export, not a download address
    cp = ctl(agent, "show", sid2)
    assert f"mongosnapctl export {sid2} > {sid2}.archive" in cp.stdout, cp.stdout
    run = subprocess.run(ctl_command(agent.bus.address, "download-url", sid2), capture_output=True,
                         text=True, env=ctl_env(), timeout=60)
    assert run.returncode != 0 and "mongosnapctl export" in run.stderr, run.stderr

    # export through the agent, restored by the stock mongorestore
    out = tmp_path / "dump.archive"
    with open(out, "wb") as f:
        p = subprocess.run(ctl_command(agent.bus.address, "export", sid2), stdout=f,
                           stderr=subprocess.PIPE, text=True, env=ctl_env(), timeout=120)
    assert p.returncode == 0, p.stderr
    assert out.stat().st_size > 1000
    target = ferretdb_factory("chunked-export-target")
    from conftest import TOOLS_BIN
    cp = subprocess.run([str(TOOLS_BIN / "mongorestore"), "--uri", target.uri, "--noIndexRestore",
                         f"--archive={out}"], capture_output=True, text=True, timeout=120)
    assert "0 document(s) failed to restore" in cp.stderr, cp.stderr[-2000:]
    assert data_digest(target.client, ["shop", "logs"]) == data_digest(fresh_db.client, ["shop", "logs"])


def test_chunked_with_gzip_is_refused(agent, fresh_db):
    agent.write_policy("bad", fresh_db.uri, Format="chunked", Compression="gzip")
    agent.start()
    errors = agent.prop(MANAGER_PATH, MANAGER_IFACE, "PolicyErrors")
    assert any("Format=chunked compresses each chunk with zstd" in e for e in errors), errors
