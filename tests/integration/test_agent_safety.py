"""Restores and retention must never destroy what they were not asked to touch: the agent's side.

  * a snapshot whose last verification failed is listed so (verify_state in the rows, VERIFIED
    in mongosnapctl list-snapshots) and StartRestore refuses it with
    io.mongosnap1.Error.SnapshotDamaged, unless the caller passes force;
  * a snapshot dated in the future (a node whose clock was ahead; here a manifest dated 2030
    loaded by resync, as in the adversarial hour) is flagged and never counts as the newest:
    with KeepLast=1 each new snapshot stays and the stale one goes, where before every new
    snapshot was expired the moment it completed;
  * retention never removes more than 10 snapshots (or more than half) in one go without
    confirmation: Edit says what it would remove and needs force; a reload of a changed file
    holds the removal (RetentionHeld) until mongosnapctl edit POLICY --force.
The rules themselves, with random clocks, are property-tested in tests/unit/test-retention.c.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil

import pytest

from agent_fixtures import *  # noqa: F401,F403
from agent_fixtures import BusError, MANAGER_IFACE, MANAGER_PATH, POLICY_IFACE, RESTORE_IFACE, \
    SNAPSHOT_IFACE, decode, gdbus, start_restore
from helpers import flip_byte
from test_agent_restore import completed_snapshot, list_restores, seed, wait_restore
from test_ctl import ctl


def test_failed_verification_is_shown_and_refuses_restore_without_force(agent, fresh_db):
    seed(fresh_db.client)
    agent.write_policy("p", fresh_db.uri)
    agent.start()
    path = completed_snapshot(agent, "p")
    sid = decode(path)
    archive = next(p for p in (agent.store / "p").iterdir() if ".archive" in p.name)
    flip_byte(archive, archive.stat().st_size // 2)
    gdbus(agent, path, SNAPSHOT_IFACE, "Verify")
    agent.wait_for(lambda: agent.prop(path, SNAPSHOT_IFACE, "VerifyState") == "failed",
                   "the verification fails")
    assert agent.snapshot(sid)["verify_state"] == "failed"
    out = ctl(agent, "list-snapshots", "p")
    assert re.search(rf"{sid}\s+p\s+test-node\s+completed\s+failed", out.stdout), out.stdout

    with pytest.raises(BusError) as ei:
        start_restore(agent, sid, fresh_db.uri, "{'ns_from': <['shop.*']>, 'ns_to': <['c.*']>}")
    assert ei.value.name == "io.mongosnap1.Error.SnapshotDamaged", ei.value
    assert "verify it again" in ei.value.message and "force" in ei.value.message
    assert list_restores(agent) == []
    out = ctl(agent, "restore", sid, "--to", fresh_db.uri, "--ns-from", "shop.*", "--ns-to",
              "c.*", expect=1)
    assert "--force" in out.stderr, out.stderr

    # With force it goes ahead, and --drop still checks the bytes first: nothing is dropped.
    rpath = start_restore(agent, sid, fresh_db.uri,
                          "{'ns_from': <['shop.*']>, 'ns_to': <['c.*']>, 'drop': <true>, "
                          "'force': <true>}")
    assert wait_restore(agent, rpath) == "failed"
    assert "nothing was dropped" in agent.prop(rpath, RESTORE_IFACE, "Error")
    assert "c" not in fresh_db.client.list_database_names()


def resign_manifest(text: str) -> str:
    """The manifest's self-checksum computed again over text (as ms_manifest_parse checks it)."""
    body = text.rstrip("\r\n")
    body = re.sub(r'("manifest_sha256" : ")[0-9a-f]{64}"', r'\g<1>' + "0" * 64 + '"', body)
    digest = hashlib.sha256(body.encode()).hexdigest()
    return body.replace("0" * 64, digest, 1) + "\n"


def test_a_future_dated_snapshot_does_not_turn_retention_against_new_ones(agent, fresh_db):
    seed(fresh_db.client)
    agent.write_policy("p", fresh_db.uri, retention_KeepLast="1")
    agent.start()
    first = decode(completed_snapshot(agent, "p"))
    # A copy of it, dated 2030 and with no start order: a node whose clock was ahead.
    d = agent.store / "p"
    manifest = (d / f"{first}.manifest.json").read_text()
    stale = "p-20300101T000000Z"
    archive = next(x for x in d.iterdir() if x.name.startswith(first) and ".archive" in x.name)
    shutil.copy(archive, d / archive.name.replace(first, stale))
    text = manifest.replace(first, stale)
    text = re.sub(r'"finished_at" : "[^"]+"', '"finished_at" : "2030-01-01T00:00:00Z"', text)
    text = re.sub(r'"started_at" : "[^"]+"', '"started_at" : "2029-12-31T23:59:00Z"', text)
    text = re.sub(r'"policy" : \{[^}]*\}, ', "", text)
    (d / f"{stale}.manifest.json").write_text(resign_manifest(text))
    agent.call(MANAGER_PATH, MANAGER_IFACE, "Resync")
    agent.wait_for(lambda: any(s["id"] == stale for s in agent.list_snapshots()),
                   "resync adopts the stale snapshot")
    assert agent.snapshot(stale)["future_dated"] is True

    for _ in range(2):
        new = decode(completed_snapshot(agent, "p"))
        agent.wait_for(lambda: agent.snapshot(new)["state"] == "completed", "the new one stays")
        states = {s["id"]: s["state"] for s in agent.list_snapshots()}
        assert states[new] == "completed", states
    agent.wait_for(lambda: agent.snapshot(stale)["state"] == "expired",
                   "the stale one goes (KeepLast=1 over the start order)")
    assert agent.snapshot(first)["state"] == "expired"


def take(agent, policy, n):
    return [decode(completed_snapshot(agent, policy)) for _ in range(n)]


def test_mass_removal_is_previewed_and_needs_force(agent, fresh_db):
    fresh_db.client.tiny.c.insert_one({"_id": 1})
    agent.write_policy("p", fresh_db.uri)
    agent.start()
    ids = take(agent, "p", 14)
    pol = agent.policy_path("p")
    with pytest.raises(BusError) as ei:
        agent.call(pol, POLICY_IFACE, "Edit", "a{ss}", 1, "KeepLast", "1")
    assert ei.value.name == "io.mongosnap1.Error.NeedsForce", ei.value
    assert "13 of 14 snapshots" in ei.value.message and ids[0] in ei.value.message
    assert "KeepLast" not in (agent.policy_dir / "p.conf").read_text()
    assert all(s["state"] == "completed" for s in agent.list_snapshots("p"))
    out = ctl(agent, "edit", "p", "KeepLast=1", expect=2)
    assert "--force" in out.stderr

    # A change of the file by hand: held, said, nothing removed.
    agent.write_policy("p", fresh_db.uri, retention_KeepLast="2")
    agent.call(MANAGER_PATH, MANAGER_IFACE, "Reload")
    agent.wait_for(lambda: agent.prop(pol, POLICY_IFACE, "RetentionHeld"), "retention held")
    assert "12 of 14" in agent.prop(pol, POLICY_IFACE, "RetentionHeld")
    assert all(s["state"] == "completed" for s in agent.list_snapshots("p"))
    out = ctl(agent, "status", "p")
    assert "12 of 14" in out.stdout, out.stdout

    # Confirmed: removed, and the hold is gone.
    ctl(agent, "edit", "p", "--force")
    agent.wait_for(lambda: sum(s["state"] == "completed" for s in agent.list_snapshots("p")) == 2,
                   "the confirmed removal")
    assert agent.prop(pol, POLICY_IFACE, "RetentionHeld") == ""
    # One more snapshot removes one more, without asking (a normal pass).
    take(agent, "p", 1)
    agent.wait_for(lambda: sum(s["state"] == "completed" for s in agent.list_snapshots("p")) == 2,
                   "a normal pass")


def test_invalid_schedule_is_refused_and_nothing_changes(agent, fresh_db):
    agent.write_policy("p", fresh_db.uri, Schedule="daily")
    agent.start()
    pol = agent.policy_path("p")
    with pytest.raises(BusError) as ei:
        agent.call(pol, POLICY_IFACE, "Edit", "a{ss}", 1, "Schedule", "bogus calendar")
    assert ei.value.name == "io.mongosnap1.Error.InvalidArgument", ei.value
    assert "bogus calendar" in ei.value.message and "systemd" in ei.value.message
    assert "Schedule=daily" in (agent.policy_dir / "p.conf").read_text()
    assert agent.prop(pol, POLICY_IFACE, "Schedule") == "daily"
    out = ctl(agent, "edit", "p", "Schedule=bogus calendar", expect=2)
    assert "Failed to parse calendar specification" in out.stderr, out.stderr


def test_a_killed_verification_reaches_no_verdict(agent, fresh_db, tmp_path):
    """A verification whose worker is killed (or cannot run) says nothing about the snapshot:
    it is 'interrupted', not 'failed', and the snapshot still restores without force. (The
    crash campaign met it: a verify worker killed mid-read made the next restore refused.)"""
    real = agent.worker
    wrapper = tmp_path / "worker-killed-when-verifying"
    wrapper.write_text(f'#!/bin/sh\n[ "$1" = verify ] && kill -KILL $$\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    seed(fresh_db.client)
    agent.write_policy("p", fresh_db.uri)
    agent.worker = wrapper
    agent.start()
    path = completed_snapshot(agent, "p")
    sid = decode(path)
    gdbus(agent, path, SNAPSHOT_IFACE, "Verify")
    agent.wait_for(lambda: agent.prop(path, SNAPSHOT_IFACE, "VerifyState") not in ("queued",
                                                                                   "running"),
                   "the verification ends")
    assert agent.prop(path, SNAPSHOT_IFACE, "VerifyState") == "interrupted"
    assert "killed by signal KILL" in agent.prop(path, SNAPSHOT_IFACE, "VerifyError")
    rpath = start_restore(agent, sid, fresh_db.uri,
                          "{'ns_from': <['shop.*']>, 'ns_to': <['again.*']>}")
    assert wait_restore(agent, rpath) == "completed", agent.prop(rpath, RESTORE_IFACE, "Error")
