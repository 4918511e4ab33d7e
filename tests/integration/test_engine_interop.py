"""Interoperability with the stock tools: mongosnap archives restored by mongorestore, and
mongodump archives (plain, --gzip, --oplog) restored and verified by mongosnap-worker.

mongorestore runs with --noIndexRestore: it adds the obsolete "ns" field to index specs, which
FerretDB 1.24 refuses, so only the documents (byte-exact digests) and collection options are
compared there.  mongosnap-worker restores of mongodump archives are compared in full
(documents, indexes, options).  The dataset is helpers.load_varied_dataset without the near
16 MiB document (test_engine_roundtrip covers that one); see test_engine_roundtrip's docstring
for what FerretDB cannot store.
"""

from __future__ import annotations

import subprocess

import pytest

import helpers as h

DBS = [h.MAIN_DB, h.OTHER_DB, h.ODD_DB]


@pytest.fixture(scope="module")
def source(ferretdb, tools, tmp_path_factory):
    client = ferretdb.client
    h.drop_user_dbs(client)
    for coll in client.local.list_collection_names():
        client.local.drop_collection(coll)
    h.load_varied_dataset(client, big_document=False, many=500, array_len=10_000)
    work = tmp_path_factory.mktemp("interop")
    store = work / "store"
    store.mkdir()
    uri_file = h.write_uri_file(work, ferretdb.uri)
    h.snapshot(tools, uri_file, store, "ours-zstd")
    h.snapshot(tools, uri_file, store, "ours-gzip", "--compression", "gzip")
    return {
        "server": ferretdb,
        "work": work,
        "store": store,
        "digest": h.digest(client, DBS),
        "indexes": h.index_specs(client, DBS),
        "options": h.collection_options(client, DBS),
        # Every document, system.js included (the digests leave system.* out).
        "documents": sum(client[ns.split(".", 1)[0]][ns.split(".", 1)[1]].count_documents({})
                         for ns in h.all_collections(client, DBS)),
    }


@pytest.fixture
def target(ferretdb_factory, tmp_path):
    server = ferretdb_factory(name="interop-target")
    server.uri_file = h.write_uri_file(tmp_path, server.uri, "target-uri")
    return server


def mongorestore(tools, target, *args):
    cp = tools.run("mongorestore", "--uri", target.uri, "--noIndexRestore", *args)
    # mongorestore exits 0 even when documents fail: read its own count.
    assert "0 document(s) failed to restore" in cp.stderr, cp.stderr[-3000:]
    return cp


def assert_documents_equal(target_client, source):
    got = h.data_digest(target_client, DBS)
    want = {k: (v["count"], v["sha256"]) for k, v in source["digest"].items()}
    assert got == want
    # Collection options (capped, size, max) come from the archive's metadata.
    assert h.collection_options(target_client, DBS) == source["options"]


# ---- our archives, stock mongorestore -------------------------------------------------------

def test_mongorestore_reads_our_zstd_archive(tools, source, target, tmp_path):
    plain = tmp_path / "ours.archive"
    subprocess.run(["zstd", "-d", "-q", "-f", str(h.archive_path(source["store"], "ours-zstd")),
                    "-o", str(plain)], check=True, timeout=120)
    cp = mongorestore(tools, target, f"--archive={plain}")
    assert f"{source['documents']} document(s) restored successfully" in cp.stderr
    assert_documents_equal(target.client, source)


def test_mongorestore_reads_our_gzip_archive(tools, source, target):
    archive = h.archive_path(source["store"], "ours-gzip", "gzip")
    cp = mongorestore(tools, target, "--gzip", f"--archive={archive}")
    assert f"{source['documents']} document(s) restored successfully" in cp.stderr
    assert_documents_equal(target.client, source)


def test_mongorestore_reads_our_archive_with_captured_oplog(tools, ferretdb_factory, target, tmp_path):
    """With an oplog on the source, our archive lists the captured oplog ("" / "oplog") in its
    prelude as mongodump --oplog does; mongorestore (without --oplogReplay: FerretDB has no
    applyOps) must still restore the collections."""
    src = ferretdb_factory(name="interop-oplog-ours")
    src.client.local.create_collection("oplog.rs", capped=True, size=64 * 1024 * 1024)
    h.load_simple_dataset(src.client, "oo", {"a": 200, "b": 20})
    store = tmp_path / "store"
    store.mkdir()
    h.snapshot(tools, h.write_uri_file(tmp_path, src.uri, "src"), store, "withoplog")
    assert h.read_manifest(store, "withoplog")["consistency"]["point_in_time"] is True
    plain = tmp_path / "withoplog.archive"
    subprocess.run(["zstd", "-d", "-q", "-f", str(h.archive_path(store, "withoplog")), "-o", str(plain)],
                   check=True, timeout=120)
    assert any(i.kind == "metadata" and i.namespace == ".oplog" for i in h.archive_layout(plain.read_bytes()))
    cp = mongorestore(tools, target, f"--archive={plain}")
    assert "220 document(s) restored successfully" in cp.stderr
    assert h.data_digest(target.client, ["oo"]) == h.data_digest(src.client, ["oo"])


def test_worker_verifies_our_archive_with_manifest_file(tools, source, tmp_path):
    archive = h.archive_path(source["store"], "ours-zstd")
    manifest = h.manifest_path(source["store"], "ours-zstd")
    run = h.expect_ok(h.run_worker(tools, "verify", "--archive", archive, "--manifest", manifest))
    assert "all checksums and counts match the manifest" in run.stdout
    # The archive of another snapshot does not match this manifest.
    other = h.archive_path(source["store"], "ours-gzip", "gzip")
    run = h.run_worker(tools, "verify", "--archive", other, "--manifest", manifest)
    assert run.returncode == h.EXIT_CORRUPT, run.describe()
    assert "manifest" in run.stderr


# ---- stock mongodump archives, mongosnap-worker ---------------------------------------------

@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_worker_restores_and_verifies_mongodump_archive(tools, source, target, tmp_path, gzip):
    archive = tmp_path / ("dump.archive.gz" if gzip else "dump.archive")
    tools.run("mongodump", "--uri", source["server"].uri, f"--archive={archive}",
              *(["--gzip"] if gzip else []))

    run = h.expect_ok(h.run_worker(tools, "verify", "--archive", archive, "--json"))
    verified = run.json()
    assert verified["checked_against_manifest"] is False
    assert verified["documents"] == source["documents"]
    assert verified["namespaces"] >= len(source["digest"])
    text = h.expect_ok(h.run_worker(tools, "verify", "--archive", archive)).stdout
    assert "no manifest: archive CRCs only" in text

    result = h.restore(tools, target.uri_file, "--archive", archive, "--json").json()
    assert result["documents"] == source["documents"]
    assert h.digest(target.client, DBS) == source["digest"]
    assert h.index_specs(target.client, DBS) == source["indexes"]
    assert h.collection_options(target.client, DBS) == source["options"]


def test_worker_restores_mongodump_oplog_archive(tools, ferretdb_factory, target, tmp_path):
    """mongodump --oplog works against FerretDB once local.oplog.rs exists; the worker
    verifies the captured oplog and replays it."""
    src = ferretdb_factory(name="interop-oplog-source")
    src.client.local.create_collection("oplog.rs", capped=True, size=64 * 1024 * 1024)
    h.load_simple_dataset(src.client, "od", {"a": 300, "b": 50, "empty": 0})
    src.client.od.a.create_index([("group", 1)], name="group_1")
    src.client.od.b.update_one({"_id": 3}, {"$set": {"s": "updated"}})
    src.client.od.b.delete_one({"_id": 4})
    archive = tmp_path / "oplog.archive"
    tools.run("mongodump", "--uri", src.uri, "--oplog", f"--archive={archive}")

    verified = h.expect_ok(h.run_worker(tools, "verify", "--archive", archive, "--json")).json()
    assert verified["documents"] == 300 + 49
    assert verified["oplog_entries"] >= 1  # mongodump copies at least the entry it started at

    result = h.restore(tools, target.uri_file, "--archive", archive, "--json").json()
    assert result["oplog_applied"] == verified["oplog_entries"]
    assert h.digest(target.client, ["od"]) == h.digest(src.client, ["od"])
