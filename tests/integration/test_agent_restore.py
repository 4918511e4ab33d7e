"""Restores, verification, snapshot deletion, CreatePolicy and retention through mongosnapd, on a
private bus with real FerretDB servers and a local store."""

from __future__ import annotations

from typing import List

import pytest

from agent_fixtures import *  # noqa: F401,F403
from agent_fixtures import RESTORE_IFACE, decode, gdbus, server_paused, start_restore  # noqa: F401
from agent_fixtures import BusError, CALL_TIMEOUT, MANAGER_IFACE, MANAGER_PATH, POLICY_IFACE, \
    SNAPSHOT_IFACE
from helpers import data_digest, flip_byte

RESTORE_COLUMNS = ("id", "snapshot", "target", "task_log", "elapsed_usec", "items",
                   "items_total", "progress", "create_usec", "state", "error", "path")
FINAL_SNAPSHOT = ("completed", "failed", "interrupted", "stopped")
FINAL_RESTORE = ("completed", "failed", "interrupted", "cancelled")
DOCS = 400
TARGET_PASSWORD = "s3cret-Target-Pw-91"


def seed(client, db="shop"):
    for name in ("orders", "users"):
        client[db][name].insert_many(
            [{"i": i, "name": f"{name}-{i}", "pad": "y" * 64} for i in range(DOCS)])
    client["logs"]["events"].insert_many([{"i": i} for i in range(DOCS // 2)])


def list_restores(agent) -> List[dict]:
    (rows,) = agent.call(MANAGER_PATH, MANAGER_IFACE, "ListRestores")
    return [dict(zip(RESTORE_COLUMNS, r)) for r in rows]


def wait_restore(agent, path: str, timeout: float = 90) -> str:
    def done():
        s = agent.prop(path, RESTORE_IFACE, "State")
        return s if s in FINAL_RESTORE else None
    return agent.wait_for(done, f"{path} final", timeout)


def completed_snapshot(agent, policy: str) -> str:
    path = agent.take_snapshot(policy)
    assert agent.wait_snapshot_state(path, FINAL_SNAPSHOT) == "completed", \
        agent.prop(path, SNAPSHOT_IFACE, "Error")
    return path


def test_restore_with_rename_and_filter(agent, fresh_db, ferretdb_factory):
    seed(fresh_db.client)
    target = ferretdb_factory("target", auth=("admin", TARGET_PASSWORD))
    agent.write_policy("nightly", fresh_db.uri)
    agent.start()
    snap = completed_snapshot(agent, "nightly")
    sid = decode(snap)

    path = start_restore(
        agent, sid, target.uri,
        "{'ns_include': <['shop.*']>, 'ns_from': <['shop.*']>, 'ns_to': <['copy.*']>, "
        "'drop': <true>}")
    assert path.startswith("/io/mongosnap1/restore/"), path
    assert wait_restore(agent, path) == "completed", agent.prop(path, RESTORE_IFACE, "Error")

    # The data arrived renamed, byte for byte, and the excluded database did not.
    source = data_digest(fresh_db.client, ["shop"], rename={"shop": "copy"})
    assert data_digest(target.client, ["copy"]) == source
    assert "logs" not in target.client.list_database_names()
    assert "shop" not in target.client.list_database_names()

    rid = decode(path)
    (row,) = [r for r in list_restores(agent) if r["id"] == rid]
    assert row["snapshot"] == sid and row["state"] == "completed" and row["error"] == ""
    assert row["items"] == 2 * DOCS and row["progress"] == 100.0, row
    # Progress counts what this restore selected (shop.*, not logs.events), and the bytes are
    # those the target took: the selected documents (~110 B each), not the stored archive nor
    # the whole snapshot.
    assert row["items_total"] == 2 * DOCS, row
    written = agent.prop(path, RESTORE_IFACE, "BytesTransferred")
    assert 2 * DOCS * 90 < written < 2 * DOCS * 160, written
    assert agent.prop(path, RESTORE_IFACE, "Phase") == ""  # only while it runs
    assert row["task_log"] == f"MONGOSNAP_TASK={rid}" and row["path"] == path
    assert row["elapsed_usec"] > 0 and row["create_usec"] > 0
    # The target's password is nowhere: not in the row, the properties or the agent's output.
    assert TARGET_PASSWORD not in row["target"] and "127.0.0.1" in row["target"], row
    assert TARGET_PASSWORD not in agent.prop(path, RESTORE_IFACE, "Target")
    options = agent.prop(path, RESTORE_IFACE, "Options")
    assert '"ns_to"' in options and "copy.*" in options and TARGET_PASSWORD not in options
    assert agent.prop(path, RESTORE_IFACE, "SourceSnapshot") == sid
    assert TARGET_PASSWORD not in agent.log_text()
    catalog = (agent.state_dir / "mongosnap.db").read_bytes()
    assert TARGET_PASSWORD.encode() not in catalog

    # Restores survive a restart of the agent.
    agent.stop()
    agent.start()
    assert [r["state"] for r in list_restores(agent) if r["id"] == rid] == ["completed"]
    snapshots, restores = agent.call(MANAGER_PATH, MANAGER_IFACE, "Update")
    assert [r[0] for r in restores] == [rid]


def test_restore_refuses_bad_requests(agent, fresh_db, ferretdb_factory):
    seed(fresh_db.client)
    agent.write_policy("p", fresh_db.uri)
    agent.start()
    sid = decode(completed_snapshot(agent, "p"))
    uri = fresh_db.uri

    cases = [
        (("no-such-snapshot", uri, "@a{sv} {}"), "io.mongosnap1.Error.NoSuchSnapshot", "no-such"),
        ((sid, "not a uri", "@a{sv} {}"), "io.mongosnap1.Error.InvalidArgument", "connection"),
        ((sid, uri, "{'colour': <'red'>}"), "io.mongosnap1.Error.InvalidArgument", "colour"),
        ((sid, uri, "{'drop': <'yes'>}"), "io.mongosnap1.Error.InvalidArgument", "'b'"),
        ((sid, uri, "{'ns_from': <['a.*']>}"), "io.mongosnap1.Error.InvalidArgument", "pair"),
        ((sid, uri, "{'until': <'yesterday'>}"), "io.mongosnap1.Error.InvalidArgument",
         "yesterday"),
        ((sid, uri, "{'credential': <'missing-cred'>}"), "io.mongosnap1.Error.NoCredential",
         "missing-cred"),
    ]
    for args, name, needle in cases:
        with pytest.raises(BusError) as ei:
            start_restore(agent, *args)
        assert ei.value.name == name, (args, ei.value)
        assert needle in ei.value.message, (args, ei.value)
    assert list_restores(agent) == []

    # A snapshot that is not complete cannot be restored.
    agent.write_policy("broken", "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=500")
    agent.call(MANAGER_PATH, MANAGER_IFACE, "Reload")
    failed = agent.take_snapshot("broken")
    assert agent.wait_snapshot_state(failed, FINAL_SNAPSHOT) == "failed"
    with pytest.raises(BusError) as ei:
        start_restore(agent, decode(failed), uri)
    assert ei.value.name == "io.mongosnap1.Error.NotRestorable", ei.value


def test_restore_cancel_and_agent_kill(agent, fresh_db, ferretdb_factory):
    seed(fresh_db.client)
    target = ferretdb_factory("slow-target")
    agent.write_policy("p", fresh_db.uri)
    agent.start()
    sid = decode(completed_snapshot(agent, "p"))

    with server_paused(target):
        path = start_restore(agent, sid, target.uri)
        agent.wait_for(lambda: agent.prop(path, RESTORE_IFACE, "State") == "running", "running")
        gdbus(agent, path, RESTORE_IFACE, "Cancel")
        assert wait_restore(agent, path) == "cancelled"
    assert "cancelled" in agent.prop(path, RESTORE_IFACE, "Error")
    with pytest.raises(BusError) as ei:
        gdbus(agent, path, RESTORE_IFACE, "Cancel")
    assert ei.value.name == "io.mongosnap1.Error.NotRunning", ei.value

    # Killed outright mid-restore: the restarted agent records the restore as interrupted.
    with server_paused(target):
        path = start_restore(agent, sid, target.uri)
        agent.wait_for(lambda: agent.prop(path, RESTORE_IFACE, "State") == "running", "running")
        agent.kill()
    agent.start()
    (row,) = [r for r in list_restores(agent) if r["id"] == decode(path)]
    assert row["state"] == "interrupted" and "crash or restart" in row["error"], row


def test_verify_passes_then_detects_damage(agent, fresh_db):
    seed(fresh_db.client)
    agent.write_policy("v", fresh_db.uri)
    agent.start()
    snap = completed_snapshot(agent, "v")
    sid = decode(snap)
    assert agent.prop(snap, SNAPSHOT_IFACE, "VerifyState") == ""
    assert agent.prop(snap, SNAPSHOT_IFACE, "VerifyTime") == 0

    gdbus(agent, snap, SNAPSHOT_IFACE, "Verify")
    agent.wait_for(lambda: agent.prop(snap, SNAPSHOT_IFACE, "VerifyState") in ("passed", "failed"),
                   "verification")
    assert agent.prop(snap, SNAPSHOT_IFACE, "VerifyState") == "passed", \
        agent.prop(snap, SNAPSHOT_IFACE, "VerifyError")
    assert agent.prop(snap, SNAPSHOT_IFACE, "VerifyTime") > 0

    archive = agent.store / "v" / f"{sid}.archive.zst"
    flip_byte(archive, archive.stat().st_size // 2)
    gdbus(agent, snap, SNAPSHOT_IFACE, "Verify")
    agent.wait_for(lambda: agent.prop(snap, SNAPSHOT_IFACE, "VerifyState") in ("passed", "failed"),
                   "verification")
    assert agent.prop(snap, SNAPSHOT_IFACE, "VerifyState") == "failed"
    error = agent.prop(snap, SNAPSHOT_IFACE, "VerifyError")
    assert error and sid in error or "archive" in error, error
    # The record survives a restart with its verification.
    agent.stop()
    agent.start()
    assert agent.prop(snap, SNAPSHOT_IFACE, "VerifyState") == "failed"


def test_delete_snapshot(agent, fresh_db):
    seed(fresh_db.client)
    agent.write_policy("d", fresh_db.uri)
    agent.start()
    snap = completed_snapshot(agent, "d")
    sid = decode(snap)
    files = sorted(p.name for p in (agent.store / "d").iterdir())
    assert files == [f"{sid}.archive.zst", f"{sid}.manifest.json"], files

    gdbus(agent, snap, SNAPSHOT_IFACE, "Delete")
    assert agent.prop(snap, SNAPSHOT_IFACE, "State") == "deleted"
    # The store prunes the emptied policy directory too.
    assert not [p for p in agent.store.rglob("*") if p.is_file()], list(agent.store.rglob("*"))
    with pytest.raises(BusError) as ei:
        gdbus(agent, snap, SNAPSHOT_IFACE, "Delete")
    assert "already deleted" in ei.value.message, ei.value
    with pytest.raises(BusError) as ei:
        gdbus(agent, snap, SNAPSHOT_IFACE, "Verify")
    assert ei.value.name == "io.mongosnap1.Error.NotRestorable", ei.value


def test_create_policy(agent, fresh_db):
    agent.start()
    out = gdbus(agent, MANAGER_PATH, MANAGER_IFACE, "CreatePolicy", "fresh",
                f"{{'Source': '{fresh_db.uri}', 'Schedule': '*-*-* 02:00:00', 'KeepLast': '4'}}")
    assert "/io/mongosnap1/policy/fresh" in out, out
    text = (agent.policy_dir / "fresh.conf").read_text()
    assert "Schedule=*-*-* 02:00:00" in text and "KeepLast=4" in text, text
    pol = agent.policy_path("fresh")
    assert agent.prop(pol, POLICY_IFACE, "KeepLast") == 4
    assert agent.prop(pol, POLICY_IFACE, "Schedule") == "*-*-* 02:00:00"

    for name, settings, error, needle in [
        ("fresh", f"{{'Source': '{fresh_db.uri}'}}", "io.mongosnap1.Error.Exists", "exists"),
        ("../x", f"{{'Source': '{fresh_db.uri}'}}", "io.mongosnap1.Error.InvalidArgument",
         "not a valid policy name"),
        ("nosource", "{'KeepLast': '2'}", "io.mongosnap1.Error.InvalidArgument", "Source"),
        ("badkey", f"{{'Source': '{fresh_db.uri}', 'Colour': 'red'}}",
         "io.mongosnap1.Error.InvalidArgument", "Colour"),
        ("pw", "{'Source': 'mongodb://u:hunter2@127.0.0.1:1/'}",
         "io.mongosnap1.Error.InvalidArgument", "Credential"),
        # Refused settings are invalid arguments, whatever errno the parser chose for them.
        ("atstore", f"{{'Source': '{fresh_db.uri}', 'Store': 's3://AKIA:hunter2@bucket/p'}}",
         "io.mongosnap1.Error.InvalidArgument", "'@'"),
        ("secretopt", "{'Source': 'mongodb://127.0.0.1:1/?tlsCertificateKeyFilePassword=hunter2'}",
         "io.mongosnap1.Error.InvalidArgument", "secret option"),
    ]:
        with pytest.raises(BusError) as ei:
            gdbus(agent, MANAGER_PATH, MANAGER_IFACE, "CreatePolicy", name, settings)
        assert ei.value.name == error, (name, ei.value)
        assert needle in ei.value.message, (name, ei.value)
        assert "hunter2" not in ei.value.message
    assert sorted(p.name for p in agent.policy_dir.iterdir()) == ["fresh.conf"]


def test_retention_removes_expired_snapshots(agent, fresh_db):
    seed(fresh_db.client)
    agent.write_policy("r", fresh_db.uri, retention_KeepLast="2")
    agent.start()
    paths = [completed_snapshot(agent, "r") for _ in range(3)]
    ids = [decode(p) for p in paths]
    # The oldest fell out of KeepLast=2 when the third completed: removed and marked expired.
    assert agent.prop(paths[0], SNAPSHOT_IFACE, "State") == "expired"
    assert [agent.prop(p, SNAPSHOT_IFACE, "State") for p in paths[1:]] == ["completed"] * 2
    names = sorted(p.name for p in (agent.store / "r").iterdir())
    assert not [n for n in names if n.startswith(ids[0] + ".")], names
    assert len(names) == 4, names

    # Tightening retention by Edit applies at once.
    pol = agent.policy_path("r")
    agent.call(pol, POLICY_IFACE, "Edit", "a{ss}", 1, "KeepLast", "1")
    assert agent.prop(paths[1], SNAPSHOT_IFACE, "State") == "expired"
    assert agent.prop(paths[2], SNAPSHOT_IFACE, "State") == "completed"
    assert sorted(p.name for p in (agent.store / "r").iterdir()) == \
        [f"{ids[2]}.archive.zst", f"{ids[2]}.manifest.json"]


def test_max_age_expiry(agent, fresh_db):
    """MaxAge= gives expire times and removes what is past it. (The timer that fires at the
    next expire time is not exercised here: its accuracy is a minute.)"""
    seed(fresh_db.client)
    agent.write_policy("age", fresh_db.uri, retention_KeepLast="5", retention_MaxAge="1d")
    agent.start()
    first = completed_snapshot(agent, "age")
    second = completed_snapshot(agent, "age")
    assert agent.prop(first, SNAPSHOT_IFACE, "ExpireTime") > 0
    assert agent.prop(second, SNAPSHOT_IFACE, "ExpireTime") == 0  # the newest never expires
    # Shorten MaxAge so the first is already past it: it goes at once (Edit applies retention).
    pol = agent.policy_path("age")
    agent.call(pol, POLICY_IFACE, "Edit", "a{ss}", 1, "MaxAge", "1ms")
    assert agent.prop(first, SNAPSHOT_IFACE, "State") == "expired"
    assert agent.prop(second, SNAPSHOT_IFACE, "State") == "completed"


def test_policy_namespace_filters(agent, fresh_db):
    """IncludeNamespaces=/ExcludeNamespaces= reach the worker: the snapshot holds only them."""
    import json
    seed(fresh_db.client)
    agent.write_policy("part", fresh_db.uri, IncludeNamespaces="shop.*",
                       ExcludeNamespaces="shop.users")
    agent.start()
    snap = completed_snapshot(agent, "part")
    sid = decode(snap)
    assert agent.prop(snap, SNAPSHOT_IFACE, "Items") == DOCS  # shop.orders only
    manifest = json.loads((agent.store / "part" / f"{sid}.manifest.json").read_text())
    assert manifest["ns_include"] == ["shop.*"] and manifest["ns_exclude"] == ["shop.users"]
    pol = agent.policy_path("part")
    assert agent.prop(pol, POLICY_IFACE, "IncludeNamespaces") == ["shop.*"]
    assert agent.prop(pol, POLICY_IFACE, "ExcludeNamespaces") == ["shop.users"]


def test_snapshot_removes_stale_temporary_files(agent, fresh_db):
    seed(fresh_db.client)
    agent.write_policy("tidy", fresh_db.uri)
    stale = agent.store / "tidy" / ".tmp-tidy-leftover-0123456789abcdef"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half an archive")
    agent.start()
    completed_snapshot(agent, "tidy")
    assert not stale.exists()
