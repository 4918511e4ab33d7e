"""The agent with an S3 store (MinIO): snapshots uploaded, the download address listed and
usable with plain curl, restore and verify read from S3, Delete and retention remove objects."""

from __future__ import annotations

import re
import subprocess

from agent_fixtures import *  # noqa: F401,F403
from agent_fixtures import MANAGER_IFACE, MANAGER_PATH, POLICY_IFACE, SNAPSHOT_IFACE
from helpers import data_digest
from minio_fixtures import *  # noqa: F401,F403
from toxiproxy_fixtures import *  # noqa: F401,F403
from test_agent_restore import completed_snapshot, decode, gdbus, seed, start_restore, \
    wait_restore

PREFIX = "rs0"


def s3_agent(agent, minio, bucket, source, **keys):
    (agent.credentials / "s3-access-key-id").write_text(minio.access_key)
    (agent.credentials / "s3-secret-access-key").write_text(minio.secret_key)
    agent.write_policy("cloud", source, Store=minio.location(bucket, PREFIX), **keys)
    agent.start()


def test_agent_s3_snapshot_download_restore(agent, fresh_db, ferretdb_factory, minio, s3_bucket,
                                            tmp_path):
    seed(fresh_db.client)
    s3_agent(agent, minio, s3_bucket, fresh_db.uri)
    snap = completed_snapshot(agent, "cloud")
    sid = decode(snap)
    keys = minio.keys(s3_bucket)
    archive_key = f"{PREFIX}/cloud/{sid}.archive.zst"
    assert archive_key in keys and f"{PREFIX}/cloud/{sid}.manifest.json" in keys, keys

    # The listed download address fetches exactly the stored archive with plain curl.
    (row,) = agent.list_snapshots("cloud")
    url = row["download_address"]
    assert url.startswith(minio.endpoint) and "X-Amz-Signature=" in url, url
    assert minio.secret_key not in url
    out = tmp_path / "archive.zst"
    subprocess.run(["curl", "-sSf", "-o", str(out), url], check=True, timeout=30)
    body = minio.client.get_object(Bucket=s3_bucket, Key=archive_key)["Body"].read()
    assert out.read_bytes() == body and len(body) == row["bytes"]
    assert agent.prop(snap, SNAPSHOT_IFACE, "DownloadAddress").startswith(minio.endpoint)
    (short,) = agent.call(snap, SNAPSHOT_IFACE, "GetDownloadAddress", "t", 60_000_000)
    assert "X-Amz-Expires=60" in short, short

    # Verify and restore read from S3.
    gdbus(agent, snap, SNAPSHOT_IFACE, "Verify")
    agent.wait_for(lambda: agent.prop(snap, SNAPSHOT_IFACE, "VerifyState") in ("passed", "failed"),
                   "verification")
    assert agent.prop(snap, SNAPSHOT_IFACE, "VerifyState") == "passed", \
        agent.prop(snap, SNAPSHOT_IFACE, "VerifyError")
    target = ferretdb_factory("s3-target")
    path = start_restore(agent, sid, target.uri)
    assert wait_restore(agent, path) == "completed", agent.prop(path, "io.mongosnap1.Restore",
                                                                 "Error")
    assert data_digest(target.client) == data_digest(fresh_db.client)

    # Delete removes both objects from the bucket (a worker does it, off the event loop); the
    # record says deleted at once.
    gdbus(agent, snap, SNAPSHOT_IFACE, "Delete")
    assert agent.prop(snap, SNAPSHOT_IFACE, "State") == "deleted"
    agent.wait_for(lambda: not [k for k in minio.keys(s3_bucket) if sid in k], "objects removed",
                   timeout=30)
    assert minio.access_key not in agent.log_text() and minio.secret_key not in agent.log_text()


def test_agent_s3_retention_and_purge(agent, fresh_db, minio, s3_bucket):
    seed(fresh_db.client)
    s3_agent(agent, minio, s3_bucket, fresh_db.uri, retention_KeepLast="1")
    first_path = completed_snapshot(agent, "cloud")
    first = decode(first_path)
    second = decode(completed_snapshot(agent, "cloud"))
    agent.wait_for(lambda: not [k for k in minio.keys(s3_bucket) if f"/{first}." in k],
                   "the expired snapshot removed", timeout=30)
    keys = minio.keys(s3_bucket)
    assert [k for k in keys if f"/{second}." in k], keys
    # Delete without purge keeps the bucket's objects; with purge they go.
    pol = agent.policy_path("cloud")
    agent.call(pol, POLICY_IFACE, "Delete", "b", "false")
    assert [k for k in minio.keys(s3_bucket) if f"/{second}." in k]
    agent.write_policy("cloud", fresh_db.uri, Store=minio.location(s3_bucket, PREFIX))
    agent.call(MANAGER_PATH, MANAGER_IFACE, "Reload")
    agent.call(agent.policy_path("cloud"), POLICY_IFACE, "Delete", "b", "true")
    agent.wait_for(lambda: not [k for k in minio.keys(s3_bucket) if f"/{second}." in k],
                   "purged", timeout=30)
    # The first went by retention, not by the purge: its record says so.
    assert agent.prop(first_path, SNAPSHOT_IFACE, "State") == "expired"


def test_ctl_download_url(agent, fresh_db, minio, s3_bucket, tmp_path):
    from conftest import BUILD_DIR
    seed(fresh_db.client)
    s3_agent(agent, minio, s3_bucket, fresh_db.uri)
    sid = decode(completed_snapshot(agent, "cloud"))
    ctl = [str(BUILD_DIR / "src" / "ctl" / "mongosnapctl"), f"--address={agent.bus.address}"]
    cp = subprocess.run(ctl + ["download-url", sid, "--expires", "2min"], capture_output=True,
                        text=True, timeout=30)
    assert cp.returncode == 0, cp.stderr
    url = cp.stdout.strip()
    assert "X-Amz-Expires=120" in url, url
    out = tmp_path / "a"
    subprocess.run(["curl", "-sSf", "-o", str(out), url], check=True, timeout=30)
    key = f"{PREFIX}/cloud/{sid}.archive.zst"
    assert out.read_bytes() == minio.client.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    bad = subprocess.run(ctl + ["download-url", sid, "--expires", "soon"], capture_output=True,
                         text=True, timeout=30)
    assert bad.returncode == 2 and "--expires" in bad.stderr, bad
    missing = subprocess.run(ctl + ["download-url", "nope"], capture_output=True, text=True,
                             timeout=30)
    assert missing.returncode == 5, missing


def test_snapshot_aborts_stale_uploads_first(agent, fresh_db, minio, s3_bucket):
    """A multipart upload left under the policy's prefix (a killed worker's) is aborted by the
    next snapshot of the policy; one under another prefix is not touched."""
    seed(fresh_db.client)
    mine = minio.client.create_multipart_upload(Bucket=s3_bucket,
                                                Key=f"{PREFIX}/cloud/cloud-old.archive.zst")
    other = minio.client.create_multipart_upload(Bucket=s3_bucket, Key="elsewhere/x.archive")
    s3_agent(agent, minio, s3_bucket, fresh_db.uri)
    completed_snapshot(agent, "cloud")
    left = {u["UploadId"] for u in minio.client.list_multipart_uploads(
        Bucket=s3_bucket).get("Uploads", [])}
    assert mine["UploadId"] not in left and other["UploadId"] in left, left


def test_failed_removal_keeps_the_snapshot(agent, fresh_db, minio, s3_bucket):
    """When the store refuses the removal (here: the S3 secret was changed), nothing was removed,
    so the snapshot is listed as completed again and its objects are intact."""
    seed(fresh_db.client)
    s3_agent(agent, minio, s3_bucket, fresh_db.uri)
    snap = completed_snapshot(agent, "cloud")
    sid = decode(snap)
    (agent.credentials / "s3-secret-access-key").write_text("not-the-secret-at-all")
    gdbus(agent, snap, SNAPSHOT_IFACE, "Delete")
    agent.wait_for(lambda: agent.prop(snap, SNAPSHOT_IFACE, "State") == "completed",
                   "the snapshot given back", timeout=60)
    assert len([k for k in minio.keys(s3_bucket) if sid in k]) == 2
    assert "not-the-secret-at-all" not in agent.log_text()
    (agent.credentials / "s3-secret-access-key").write_text(minio.secret_key)
    gdbus(agent, snap, SNAPSHOT_IFACE, "Delete")
    agent.wait_for(lambda: not [k for k in minio.keys(s3_bucket) if sid in k], "removed",
                   timeout=30)


def test_agent_s3_through_faults(agent, fresh_db, minio, s3_bucket, toxiproxy):
    """The agent's S3 store behind toxiproxy: latency and resets during the upload are retried
    by the worker and the snapshot completes and verifies; with MinIO unreachable the snapshot
    fails with the endpoint named, and no upload or object is left behind; Delete goes through
    once the store answers again."""
    from toxiproxy_fixtures import Proxy
    seed(fresh_db.client)
    proxy = Proxy(toxiproxy, f"agent-minio-{s3_bucket}", f"127.0.0.1:{minio.port}").create()
    try:
        (agent.credentials / "s3-access-key-id").write_text(minio.access_key)
        (agent.credentials / "s3-secret-access-key").write_text(minio.secret_key)
        agent.write_policy("cloud", fresh_db.uri,
                           Store=proxy.location(s3_bucket, PREFIX, max_attempts="8",
                                                stall_timeout="5s"))
        agent.start()
        proxy.latency(100)
        reset = proxy.reset_peer(0, stream="upstream")
        proxy.remove_after(reset, 1.5)  # the first attempts are reset, later ones get through
        snap = completed_snapshot(agent, "cloud")
        sid = decode(snap)
        gdbus(agent, snap, SNAPSHOT_IFACE, "Verify")
        agent.wait_for(lambda: agent.prop(snap, SNAPSHOT_IFACE, "VerifyState") in
                       ("passed", "failed"), "verification", timeout=90)
        assert agent.prop(snap, SNAPSHOT_IFACE, "VerifyState") == "passed"
        assert re.search(r"attempt \d+ of \d+ failed", agent.log_text()), \
            "no retry was logged: the resets did not hit the upload"

        # MinIO unreachable: the snapshot fails, naming the endpoint; nothing is left.
        proxy.server.request("POST", f"/proxies/{proxy.name}", {"enabled": False})
        path = agent.take_snapshot("cloud")
        assert agent.wait_snapshot_state(path, ("completed", "failed"), timeout=120) == "failed"
        error = agent.prop(path, SNAPSHOT_IFACE, "Error")
        assert f"127.0.0.1:{proxy.port}" in error, error
        assert minio.secret_key not in error
        failed = decode(path)
        assert not [k for k in minio.keys(s3_bucket) if failed in k]
        assert minio.client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []

        # Back: Delete of the first snapshot goes through the proxy.
        proxy.server.request("POST", f"/proxies/{proxy.name}", {"enabled": True})
        gdbus(agent, snap, SNAPSHOT_IFACE, "Delete")
        agent.wait_for(lambda: not [k for k in minio.keys(s3_bucket) if sid in k],
                       "objects removed", timeout=60)
    finally:
        proxy.delete()
