"""Nothing in a target is dropped or overwritten before the snapshot is known to be whole.

The adversarial hour's second finding: one flipped byte near the end of an archive, restored with
--drop over the live database, left 4,000 of 15,000 documents and an empty collection.  Here the
restore goes over the live database itself (the worst case: the operator restores over
production), after that database has changed since the snapshot, with damage at the first byte,
the middle and the last byte of the stored object, in a local and an S3 store, plain and
encrypted.  Each must fail with exit 3, say that nothing was changed, and leave every collection
of the target byte for byte as it was (documents and indexes).  A whole snapshot then restores
with --drop as before.
"""

from __future__ import annotations

import os
import random

import pytest

import helpers as h
from minio_fixtures import *  # noqa: F401,F403

DB = "live"
COLLECTIONS = {"orders": 1500, "customers": 600}
PAD = 1200  # incompressible bytes per document: the archive spans several 1 MiB encrypted chunks
KEY_HEX = "5f" * 32


def load(client):
    rnd = random.Random(7)
    for coll, n in COLLECTIONS.items():
        client[DB][coll].insert_many(
            [{"_id": i, "n": i, "blob": rnd.randbytes(PAD)} for i in range(n)])
    client[DB].orders.create_index("n", name="n_1")


def s3_env(minio):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_") and k != "CREDENTIALS_DIRECTORY"}
    env.update(AWS_ACCESS_KEY_ID=minio.access_key, AWS_SECRET_ACCESS_KEY=minio.secret_key)
    return env


@pytest.mark.parametrize("store_kind", ["local", "s3"])
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_damaged_snapshot_restored_with_drop_leaves_target_as_it_was(
        tools, fresh_db, tmp_path, request, store_kind, encrypted):
    client = fresh_db.client
    load(client)
    uri_file = h.write_uri_file(tmp_path, fresh_db.uri)
    env = None
    if store_kind == "local":
        store = tmp_path / "store"
        store.mkdir()
    else:
        minio = request.getfixturevalue("minio")
        bucket = request.getfixturevalue("s3_bucket")
        store = minio.location(bucket, "drop")
        env = s3_env(minio)
    extra = []
    if encrypted:
        key = tmp_path / "key"
        key.write_text(KEY_HEX)
        key.chmod(0o600)
        extra = ["--key-file", key]
    h.expect_ok(h.run_worker(tools, "snapshot", "--uri-file", uri_file, "--store", store,
                             "--name", "snap", *extra, env=env))

    # The live database moves on after the snapshot.
    client[DB].orders.insert_many([{"_id": 10_000 + i, "n": -i} for i in range(50)])
    client[DB].customers.delete_many({"_id": {"$lt": 20}})
    client[DB].extra.insert_one({"_id": "not in the snapshot"})
    live = h.digest(client, [DB])

    if store_kind == "local":
        archive = next(p for p in store.iterdir() if ".archive" in p.name)
        original = archive.read_bytes()
    else:
        archive_key = next(k for k in minio.keys(bucket) if ".archive" in k)
        original = minio.client.get_object(Bucket=bucket, Key=archive_key)["Body"].read()
    assert len(original) > 2 * 1024 * 1024  # several encrypted chunks

    for where, offset in (("first byte", 0), ("middle", len(original) // 2),
                          ("last byte", len(original) - 1)):
        damaged = bytearray(original)
        damaged[offset] ^= 0x10
        if store_kind == "local":
            archive.write_bytes(bytes(damaged))
        else:
            minio.client.put_object(Bucket=bucket, Key=archive_key, Body=bytes(damaged))
        run = h.run_worker(tools, "restore", "--uri-file", uri_file, "--store", store,
                           "--snapshot", "snap", "--drop", *extra, env=env)
        assert run.returncode == h.EXIT_CORRUPT, f"{where}: {run.describe()}"
        assert "nothing was dropped or changed in the target" in run.stderr, f"{where}: {run.stderr}"
        after = h.digest(client, [DB])
        assert after == live, f"damage at the {where}: the target changed"

    # Whole again: --drop restores the snapshot's state.
    if store_kind == "local":
        archive.write_bytes(original)
    else:
        minio.client.put_object(Bucket=bucket, Key=archive_key, Body=original)
    h.expect_ok(h.run_worker(tools, "restore", "--uri-file", uri_file, "--store", store,
                             "--snapshot", "snap", "--drop", *extra, env=env))
    restored = client[DB]
    assert restored.orders.count_documents({}) == COLLECTIONS["orders"]
    assert restored.customers.count_documents({}) == COLLECTIONS["customers"]


def test_drop_from_standard_input_is_refused(tools, fresh_db, tmp_path):
    """An archive on stdin cannot be checked before the drop: refused, nothing changed."""
    client = fresh_db.client
    client[DB].orders.insert_one({"_id": 1})
    before = h.digest(client, [DB])
    uri_file = h.write_uri_file(tmp_path, fresh_db.uri)
    run = h.run_worker(tools, "restore", "--uri-file", uri_file, "--archive", "-", "--drop")
    assert run.returncode != h.EXIT_OK
    assert "standard input cannot be checked" in run.stderr, run.stderr
    assert h.digest(client, [DB]) == before
