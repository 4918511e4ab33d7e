"""Encryption at rest through mongosnapd: a policy with [Encryption] Key=NAME takes encrypted
snapshots (the worker gets --key-file $CREDENTIALS_DIRECTORY/NAME), verifies and restores them
with the policy's key, and after a key rotation restores an old snapshot with the StartRestore
option key_credential naming the old key's credential (and refuses clearly without it)."""

from __future__ import annotations

import json
import re

import pytest

from agent_fixtures import *  # noqa: F401,F403
from agent_fixtures import BusError, MANAGER_IFACE, MANAGER_PATH, SNAPSHOT_IFACE
from helpers import data_digest
from test_agent_restore import RESTORE_IFACE, completed_snapshot, decode, gdbus, seed, \
    start_restore, wait_restore

KEY_1 = "3a1f0c9b8e7d6a5f4e3d2c1b0a99887766554433221100ffeeddccbbaa998877"
KEY_2 = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00"


def write_encrypted_policy(agent, name: str, source: str, key: str) -> None:
    (agent.policy_dir / f"{name}.conf").write_text(
        f"[Policy]\nSource={source}\n\n[Encryption]\nKey={key}\n")


def write_key(agent, name: str, hex_key: str) -> None:
    path = agent.credentials / name
    path.write_text(hex_key + "\n")
    path.chmod(0o600)


def verify(agent, snap: str) -> str:
    gdbus(agent, snap, SNAPSHOT_IFACE, "Verify")
    agent.wait_for(lambda: agent.prop(snap, SNAPSHOT_IFACE, "VerifyState") in ("passed", "failed"),
                   "verification")
    return agent.prop(snap, SNAPSHOT_IFACE, "VerifyState")


def restore_renamed(agent, sid: str, target: str, extra: str = "") -> str:
    return start_restore(agent, sid, target,
                         "{'ns_include': <['shop.*']>, 'ns_from': <['shop.*']>, "
                         f"'ns_to': <['copy.*']>, 'drop': <true>{extra}}}")


def test_encrypted_policy_snapshot_verify_restore_and_rotation(agent, fresh_db):
    seed(fresh_db.client)
    fresh_db.client.shop.orders.insert_one({"_id": "canary", "note": "PLAINTEXT-CANARY-93b1"})
    write_key(agent, "backup-key", KEY_1)
    write_encrypted_policy(agent, "sec", fresh_db.uri, "backup-key")
    agent.start()

    # ---- an encrypted snapshot, verified with the policy's key ----
    snap1 = completed_snapshot(agent, "sec")
    sid1 = decode(snap1)
    archive = next((agent.store / "sec").glob(f"{sid1}.archive*"))
    data = archive.read_bytes()
    assert data[:6] == b"MSENC1" and archive.name.endswith(".enc"), archive.name
    assert b"PLAINTEXT-CANARY-93b1" not in data
    manifest = json.loads((agent.store / "sec" / f"{sid1}.manifest.json").read_text())
    key_id_1 = manifest["encryption"]["key_id"]
    assert manifest["encryption"]["cipher"] == "aes-256-gcm"
    assert verify(agent, snap1) == "passed", agent.prop(snap1, SNAPSHOT_IFACE, "VerifyError")

    # ---- a restore with the policy's key ----
    path = restore_renamed(agent, sid1, fresh_db.uri)
    assert wait_restore(agent, path) == "completed", agent.prop(path, RESTORE_IFACE, "Error")
    source = data_digest(fresh_db.client, ["shop"], rename={"shop": "copy"})
    assert data_digest(fresh_db.client, ["copy"]) == source
    fresh_db.client.drop_database("copy")

    # ---- rotation: a new key for new snapshots; the old credential stays available ----
    write_key(agent, "backup-key-2", KEY_2)
    write_encrypted_policy(agent, "sec", fresh_db.uri, "backup-key-2")
    agent.call(MANAGER_PATH, MANAGER_IFACE, "Reload")
    assert agent.prop(agent.policy_path("sec"), "io.mongosnap1.Policy", "Key") == "backup-key-2"
    snap2 = completed_snapshot(agent, "sec")
    sid2 = decode(snap2)
    manifest2 = json.loads((agent.store / "sec" / f"{sid2}.manifest.json").read_text())
    assert manifest2["encryption"]["key_id"] != key_id_1
    assert verify(agent, snap2) == "passed", agent.prop(snap2, SNAPSHOT_IFACE, "VerifyError")

    # The old snapshot with the policy's (new) key: refused, naming both key ids.
    path = restore_renamed(agent, sid1, fresh_db.uri)
    assert wait_restore(agent, path) == "failed"
    error = agent.prop(path, RESTORE_IFACE, "Error")
    assert re.search(rf"the key given \(id [0-9a-f]{{16}}\) is not the key this snapshot was "
                     rf"encrypted with \(id {key_id_1}\)", error), error
    assert "copy" not in fresh_db.client.list_database_names()

    # With key_credential naming the old key: restored.
    path = restore_renamed(agent, sid1, fresh_db.uri, ", 'key_credential': <'backup-key'>")
    assert wait_restore(agent, path) == "completed", agent.prop(path, RESTORE_IFACE, "Error")
    assert data_digest(fresh_db.client, ["copy"]) == source
    assert "key_credential" in agent.prop(path, RESTORE_IFACE, "Options")
    fresh_db.client.drop_database("copy")

    # A key_credential that is not there is NoCredential, at the call.
    with pytest.raises(BusError) as ei:
        restore_renamed(agent, sid1, fresh_db.uri, ", 'key_credential': <'no-such-key'>")
    assert ei.value.name == "io.mongosnap1.Error.NoCredential", ei.value
    assert "no-such-key" in ei.value.message

    # The keys never show: not in the agent's output, the catalog or any property.
    log = agent.log_text()
    catalog = (agent.state_dir / "mongosnap.db").read_bytes()
    for key in (KEY_1, KEY_2):
        assert key not in log and key.encode() not in catalog
        assert key not in json.dumps(agent.list_snapshots())


def test_missing_key_credential_is_refused_at_take_snapshot(agent, fresh_db):
    seed(fresh_db.client)
    write_encrypted_policy(agent, "nokey", fresh_db.uri, "absent-key")
    agent.start()
    with pytest.raises(BusError) as ei:
        agent.take_snapshot("nokey")
    assert ei.value.name == "io.mongosnap1.Error.NoCredential", ei.value
    assert "absent-key" in ei.value.message
