"""Archives without a manifest: a worker killed between its two commits (the archive, then the
manifest) left an archive nothing can restore, under a record listed interrupted; only .tmp-*
files and multipart uploads used to be cleaned, so it stayed forever. Every start's store check
and every resync now remove such an archive once no task can still commit it, and say so in
the Event Log (orphan-removed):

  * its task ended (interrupted, failed, stopped, deleted...): removed at the next start;
  * no agent knows of it: kept and reported while younger than an hour (a worker run by hand
    may be about to write the manifest), removed after;
  * a complete snapshot (archive and manifest) is never touched.
Local store and S3 (MinIO) alike.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time

from agent_fixtures import *  # noqa: F401,F403
from agent_fixtures import decode
from minio_fixtures import *  # noqa: F401,F403
from test_agent_restore import completed_snapshot, seed
from test_ctl import ctl, ctl_json

HOUR = 3600


def mark(agent, sid: str, state: str) -> None:
    """Rewrite a record's state in the catalog while the agent is stopped (what a kill between
    the worker's two commits leaves: the record interrupted, the archive stored)."""
    db = sqlite3.connect(agent.state_dir / "mongosnap.db")
    db.execute("UPDATE snapshots SET state = ?, error = 'killed' WHERE id = ?", (state, sid))
    db.commit()
    db.close()


def wait_gone(agent, exists, what: str, timeout: float = 30) -> None:
    agent.wait_for(lambda: not exists(), what, timeout)


def test_orphans_in_a_local_store(agent, fresh_db):
    seed(fresh_db.client)
    agent.write_policy("p", fresh_db.uri)
    agent.start()
    killed = decode(completed_snapshot(agent, "p"))
    whole = decode(completed_snapshot(agent, "p"))
    prefix = agent.store / "p"
    archive_of = {p.name.split(".archive")[0]: p for p in prefix.iterdir() if ".archive" in p.name}
    agent.stop()
    # 1. The task was killed after storing its archive: no manifest, listed interrupted.
    (prefix / f"{killed}.manifest.json").unlink()
    mark(agent, killed, "interrupted")
    # 2. Two archives no agent knows of: one just written, one written two hours ago.
    young = prefix / "by-hand-young.archive.zst"
    old = prefix / "by-hand-old.archive.zst"
    shutil.copy(archive_of[whole], young)
    shutil.copy(archive_of[whole], old)
    past = time.time() - 2 * HOUR
    os.utime(old, (past, past))

    agent.start()  # the start's store check
    wait_gone(agent, archive_of[killed].exists, "the killed task's archive is removed")
    wait_gone(agent, old.exists, "the old unknown archive is removed")
    assert young.exists(), "an archive someone may still complete was removed"
    assert archive_of[whole].exists() and (prefix / f"{whole}.manifest.json").exists()
    assert agent.snapshot(killed)["state"] == "interrupted"
    assert agent.snapshot(whole)["state"] == "completed"
    log = agent.log_text()  # the Event Log's own entries: test_ctl.py, in a booted systemd
    assert log.count("an archive without a manifest") >= 3, log[-3000:]
    assert "2 removals finished, 1 problem(s)" in log, log[-3000:]

    # resync reports the young one and leaves it; the complete snapshot is untouched.
    cp = ctl(agent, "resync", expect=1)
    assert "by-hand-young.archive.zst is an archive without a manifest" in cp.stderr, cp.stderr
    assert young.exists() and archive_of[whole].exists()
    # An hour later (its time moved back) the next resync removes it.
    os.utime(young, (past, past))
    res = ctl_json(agent, "resync")
    assert res["removals_finished"] == 1 and res["problems"] == [], res
    wait_gone(agent, young.exists, "the young archive, now old, is removed")
    ctl(agent, "verify", whole, "--wait")


def test_orphans_in_s3(agent, fresh_db, minio, s3_bucket):
    (agent.credentials / "s3-access-key-id").write_text(minio.access_key)
    (agent.credentials / "s3-secret-access-key").write_text(minio.secret_key)
    seed(fresh_db.client)
    agent.write_policy("cloud", fresh_db.uri, Store=minio.location(s3_bucket, "rs0"))
    agent.start()
    killed = decode(completed_snapshot(agent, "cloud"))
    whole = decode(completed_snapshot(agent, "cloud"))
    agent.stop()
    keys = minio.keys(s3_bucket)
    manifest = next(k for k in keys if k.endswith(f"{killed}.manifest.json"))
    archive = next(k for k in keys if f"{killed}.archive" in k)
    minio.client.delete_object(Bucket=s3_bucket, Key=manifest)
    mark(agent, killed, "failed")
    # One no agent knows of, just written: S3 keeps its own time, so it stays (young).
    young = archive.replace(killed, "by-hand-young")
    minio.client.copy_object(Bucket=s3_bucket, Key=young,
                             CopySource={"Bucket": s3_bucket, "Key": archive})

    agent.start()
    agent.wait_for(lambda: archive not in minio.keys(s3_bucket), "the orphan is removed from S3",
                   30)
    left = minio.keys(s3_bucket)
    assert young in left
    assert any(k.endswith(f"{whole}.manifest.json") for k in left)
    assert any(f"{whole}.archive" in k for k in left)
    assert agent.snapshot(killed)["state"] == "failed"
