"""Client-side encryption at rest through mongosnap-worker (src/io/filter-encrypt.c): a snapshot
taken with --key-file is stored as an MSENC1 object (AES-256-GCM chunks); it restores with the
key into byte-identical collections; the stored archive holds none of the plaintext (not even
after an attempt to decompress it); verify and restore without the key, or with another key,
exit 2 with a message naming the key ids; a flipped byte anywhere in the stored object makes
verify and restore exit 3; the key never appears in any output, progress line or manifest.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

import helpers as h

DB = "encdb"
RESTORED_DB = "encdb_restored"
CANARY = "CANARY-plaintext-4f1d9a7e"
KEY_HEX = "8f3b6c1e2d4a5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8"
OTHER_KEY_HEX = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
ENC_SUFFIX = {"zstd": ".archive.zst.enc", "gzip": ".archive.gz.enc", "none": ".archive.enc"}


def enc_archive(store, name, comp):
    return store / (name + ENC_SUFFIX[comp])


@pytest.fixture(scope="module")
def enc(ferretdb, tools, tmp_path_factory):
    client = ferretdb.client
    h.drop_user_dbs(client)
    for coll in client.local.list_collection_names():
        client.local.drop_collection(coll)
    # About 2.5 MB uncompressed: several 1 MiB encryption chunks for the "none" snapshot.
    h.load_simple_dataset(client, DB, {"alpha": 6000, "beta": 500, "empty": 0}, pad=400)
    client[DB].alpha.insert_one({"_id": "canary", "secret": CANARY * 4})
    client[DB].alpha.create_index([("group", 1)], name="group_1")
    work = tmp_path_factory.mktemp("encryption")
    store = work / "store"
    store.mkdir()
    uri_file = h.write_uri_file(work, ferretdb.uri)
    key_file = work / "backup.key"
    key_file.write_text(KEY_HEX + "\n")
    key_file.chmod(0o600)
    raw_key_file = work / "raw.key"
    raw_key_file.write_bytes(bytes.fromhex(KEY_HEX))  # the same key as 32 raw bytes
    other_key_file = work / "other.key"
    other_key_file.write_text(OTHER_KEY_HEX)
    runs = {}
    for comp in ("zstd", "none"):
        runs[comp] = h.snapshot(tools, uri_file, store, f"e-{comp}", "--compression", comp,
                                "--key-file", key_file, "--json", progress=True)
    return {
        "client": client, "store": store, "uri_file": uri_file, "key": key_file,
        "raw_key": raw_key_file, "other_key": other_key_file, "runs": runs,
        "digest": h.digest(client, [DB]), "indexes": h.index_specs(client, [DB]),
    }


def all_text(run: h.WorkerRun) -> str:
    return run.stdout + run.stderr + "\n".join(run.progress_lines)


def assert_no_key_leak(text: str) -> None:
    for secret in (KEY_HEX, OTHER_KEY_HEX, KEY_HEX.upper()):
        assert secret not in text
        assert secret[:32] not in text and secret[32:] not in text


def key_id(enc_fixture) -> str:
    return h.read_manifest(enc_fixture["store"], "e-zstd")["encryption"]["key_id"]


def restore_into_copy(tools, enc, store, name, *extra):
    run = h.run_worker(tools, "restore", "--uri-file", enc["uri_file"], "--store", store,
                       "--snapshot", name, "--drop", "--ns-from", f"{DB}.*",
                       "--ns-to", f"{RESTORED_DB}.*", *extra, progress=True)
    return run


@pytest.fixture
def damaged(enc, tmp_path):
    """A private copy of snapshot e-none (uncompressed, so offsets map to chunks simply)."""
    store = tmp_path / "store"
    store.mkdir()
    src = enc_archive(enc["store"], "e-none", "none")
    shutil.copy(src, store / src.name)
    shutil.copy(h.manifest_path(enc["store"], "e-none"), store)
    return store, store / src.name


# ---- snapshot ------------------------------------------------------------------------------

@pytest.mark.parametrize("comp", ["zstd", "none"])
def test_snapshot_is_encrypted_and_manifest_records_it(enc, comp):
    result = enc["runs"][comp].json()
    assert result["status"] == "ok"
    assert result["archive"] == f"e-{comp}" + ENC_SUFFIX[comp]
    archive = enc_archive(enc["store"], f"e-{comp}", comp)
    data = archive.read_bytes()
    assert data[:6] == b"MSENC1"
    manifest = h.read_manifest(enc["store"], f"e-{comp}")
    assert manifest["encryption"]["cipher"] == "aes-256-gcm"
    assert re.fullmatch(r"[0-9a-f]{16}", manifest["encryption"]["key_id"])
    assert manifest["encryption"]["chunk_size"] == 1024 * 1024
    assert manifest["encryption"]["key_id"] == result["key_id"]
    assert data[8:16].hex() == manifest["encryption"]["key_id"]
    # The manifest's size and SHA-256 are those of the stored, encrypted bytes.
    assert manifest["archive"]["size"] == len(data)
    import hashlib
    assert manifest["archive"]["sha256"] == hashlib.sha256(data).hexdigest()
    if comp == "none":
        assert manifest["archive"]["uncompressed_size"] > 2 * 1024 * 1024  # several chunks
    assert_no_key_leak(all_text(enc["runs"][comp]))
    assert_no_key_leak(json.dumps(manifest))


@pytest.mark.parametrize("comp", ["zstd", "none"])
def test_stored_archive_holds_no_plaintext(enc, comp, tmp_path):
    archive = enc_archive(enc["store"], f"e-{comp}", comp)
    data = archive.read_bytes()
    for needle in (CANARY.encode(), b"alpha-1234-", b"group_1", DB.encode()):
        assert needle not in data
    # Not a zstd frame either: decompression attempts yield nothing readable.
    out = subprocess.run(["zstd", "-d", "-c", str(archive)], capture_output=True)
    assert out.returncode != 0
    assert CANARY.encode() not in out.stdout
    # Not even with the header cut off.
    stripped = tmp_path / "stripped.zst"
    stripped.write_bytes(data[32:])
    out = subprocess.run(["zstd", "-d", "-c", str(stripped)], capture_output=True)
    assert out.returncode != 0
    assert CANARY.encode() not in out.stdout


# ---- restore and verify --------------------------------------------------------------------

@pytest.mark.parametrize("comp", ["zstd", "none"])
def test_restore_with_key_round_trip(tools, enc, comp):
    key = enc["key"] if comp == "zstd" else enc["raw_key"]  # hex and raw forms of one key
    run = restore_into_copy(tools, enc, enc["store"], f"e-{comp}", "--key-file", key)
    h.expect_ok(run)
    client = enc["client"]
    try:
        assert h.digest(client, [RESTORED_DB], rename={RESTORED_DB: DB}) == enc["digest"]
        assert h.index_specs(client, [RESTORED_DB], rename={RESTORED_DB: DB}) == enc["indexes"]
        assert client[RESTORED_DB].alpha.find_one({"_id": "canary"})["secret"] == CANARY * 4
    finally:
        client.drop_database(RESTORED_DB)
    assert_no_key_leak(all_text(run))


def test_verify_with_key_passes(tools, enc):
    for comp in ("zstd", "none"):
        run = h.expect_ok(h.run_worker(tools, "verify", "--store", enc["store"], "--snapshot",
                                       f"e-{comp}", "--key-file", enc["key"], progress=True))
        assert "all checksums and counts match the manifest" in run.stdout
        assert_no_key_leak(all_text(run))


def test_verify_and_restore_without_key_fail_clearly(tools, enc):
    kid = key_id(enc)
    run = h.run_worker(tools, "verify", "--store", enc["store"], "--snapshot", "e-zstd",
                       progress=True)
    assert run.returncode == h.EXIT_USAGE, run.describe()
    assert re.search(rf"snapshot e-zstd is encrypted \(.*key id {kid}\); give --key-file", run.stderr)
    assert run.result["status"] == "failed" and run.result["exit_code"] == h.EXIT_USAGE
    # What can be checked without the key was: the stored bytes against the manifest.
    assert "stored bytes match the manifest's size and SHA-256" in run.stderr
    run = restore_into_copy(tools, enc, enc["store"], "e-zstd")
    assert run.returncode == h.EXIT_USAGE, run.describe()
    assert f"key id {kid}" in run.stderr and "--key-file" in run.stderr
    # Refused before anything was written to the target.
    assert RESTORED_DB not in enc["client"].list_database_names()


def test_wrong_key_is_named(tools, enc):
    kid = key_id(enc)
    for cmd in ("verify", "restore"):
        if cmd == "verify":
            run = h.run_worker(tools, "verify", "--store", enc["store"], "--snapshot", "e-zstd",
                               "--key-file", enc["other_key"], progress=True)
        else:
            run = restore_into_copy(tools, enc, enc["store"], "e-zstd", "--key-file",
                                    enc["other_key"])
        assert run.returncode == h.EXIT_USAGE, run.describe()
        m = re.search(r"the key given \(id ([0-9a-f]{16})\) is not the key this snapshot was "
                      r"encrypted with \(id ([0-9a-f]{16})\)", run.stderr)
        assert m, run.describe()
        assert m.group(2) == kid and m.group(1) != kid
        assert_no_key_leak(all_text(run))
    assert RESTORED_DB not in enc["client"].list_database_names()


def test_bad_key_file_is_a_usage_error_without_echo(tools, enc, tmp_path):
    bad = tmp_path / "bad.key"
    bad.write_text("not-a-key-" + KEY_HEX[:40])
    run = h.run_worker(tools, "verify", "--store", enc["store"], "--snapshot", "e-zstd",
                       "--key-file", bad)
    assert run.returncode == h.EXIT_USAGE, run.describe()
    assert "32 raw bytes or 64 hexadecimal" in run.stderr
    assert KEY_HEX[:40] not in run.output and "not-a-key" not in run.output
    run = h.run_worker(tools, "verify", "--store", enc["store"], "--snapshot", "e-zstd",
                       "--key-file", tmp_path / "missing.key")
    assert run.returncode == h.EXIT_USAGE, run.describe()


def test_unencrypted_snapshot_restores_with_a_key_given(tools, enc, tmp_path):
    """The agent passes a policy's key for all its snapshots, older unencrypted ones too."""
    store = tmp_path / "plain"
    store.mkdir()
    h.snapshot(tools, enc["uri_file"], store, "plain", "--ns-include", f"{DB}.beta")
    h.expect_ok(h.run_worker(tools, "verify", "--store", store, "--snapshot", "plain",
                             "--key-file", enc["key"]))


# ---- tampering -----------------------------------------------------------------------------

CHUNK_RECORD = 1024 * 1024 + 16


@pytest.mark.parametrize("where", ["header-nonce", "chunk0", "chunk1-tag", "last-byte"])
def test_flipped_byte_fails_verify_and_restore(tools, enc, damaged, where):
    store, archive = damaged
    size = archive.stat().st_size
    offset = {"header-nonce": 20, "chunk0": 32 + 1000, "chunk1-tag": 32 + 2 * CHUNK_RECORD - 3,
              "last-byte": size - 1}[where]
    h.flip_byte(archive, offset, 0x04)
    run = h.run_worker(tools, "verify", "--store", store, "--snapshot", "e-none", "--key-file",
                       enc["key"])
    assert run.returncode == h.EXIT_CORRUPT, run.describe()
    assert re.search(r"encrypted chunk \d+ \(stored bytes \d+\.\.\d+\) fails authentication",
                     run.stderr), run.describe()
    if where == "chunk1-tag":
        assert "encrypted chunk 1 " in run.stderr
    run = restore_into_copy(tools, enc, store, "e-none", "--key-file", enc["key"])
    try:
        assert run.returncode == h.EXIT_CORRUPT, run.describe()
        assert "restore failed:" in run.stderr and "fails authentication" in run.stderr
        assert run.result["status"] == "failed"
        # --drop checks every chunk before it changes anything (issue: a damaged snapshot once
        # left part of its documents in a dropped target): nothing of chunk 0 went in either.
        assert "nothing was dropped or changed in the target" in run.stderr
        assert RESTORED_DB not in enc["client"].list_database_names()
    finally:
        enc["client"].drop_database(RESTORED_DB)


def test_truncated_at_chunk_boundary_fails(tools, enc, damaged):
    store, archive = damaged
    h.truncate(archive, 32 + 2 * CHUNK_RECORD)
    run = h.run_worker(tools, "verify", "--store", store, "--snapshot", "e-none", "--key-file",
                       enc["key"])
    assert run.returncode == h.EXIT_CORRUPT, run.describe()
    assert "encrypted chunk 1 " in run.stderr



def test_verify_without_key_still_detects_damage(tools, enc, damaged):
    """The manifest's SHA-256 covers the stored bytes: damage is found without the key (exit 3)."""
    store, archive = damaged
    h.flip_byte(archive, 32 + 5000)
    run = h.run_worker(tools, "verify", "--store", store, "--snapshot", "e-none")
    assert run.returncode == h.EXIT_CORRUPT, run.describe()
    assert "SHA-256" in run.stderr and "damaged" in run.stderr
