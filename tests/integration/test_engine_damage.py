"""Damaged snapshots: truncated archives (zstd, uncompressed, empty), flipped bits in the
archive (zstd, gzip, and aimed at documents, document lengths, prelude metadata and namespace
headers of an uncompressed one) and in the manifest, appended bytes, an archive swapped for
another, a missing manifest or archive.  `verify` must exit 3 and say what is wrong (for an
uncompressed archive, naming the namespace and byte offset); `restore` must never exit 0 on a
damaged snapshot and must say why.  A snapshot stopped by SIGTERM exits 5 and leaves nothing
(no archive, no manifest, no temp file) in the store; a stopped restore exits 5 too.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time

import pytest

import helpers as h

DB = "dmg"
RESTORED_DB = "dmg_restored"


@pytest.fixture(scope="module")
def pristine(ferretdb, tools, tmp_path_factory):
    """Intact snapshots (zstd "z", gzip "g", uncompressed "n") of a small dataset."""
    client = ferretdb.client
    h.drop_user_dbs(client)
    for coll in client.local.list_collection_names():
        client.local.drop_collection(coll)
    h.load_simple_dataset(client, DB, {"alpha": 1500, "beta": 300, "empty": 0}, pad=200)
    client[DB].alpha.create_index([("group", 1)], name="group_1")
    work = tmp_path_factory.mktemp("damage")
    store = work / "store"
    store.mkdir()
    uri_file = h.write_uri_file(work, ferretdb.uri)
    h.snapshot(tools, uri_file, store, "z")
    h.snapshot(tools, uri_file, store, "g", "--compression", "gzip")
    h.snapshot(tools, uri_file, store, "n", "--compression", "none")
    return {"store": store, "uri_file": uri_file, "client": client}


COMP_OF = {"z": "zstd", "g": "gzip", "n": "none"}


@pytest.fixture
def copy(pristine, tmp_path):
    """copy(name) -> (store, archive path, manifest path): a private copy to damage."""
    store = tmp_path / "store"
    store.mkdir()

    def make(name: str):
        comp = COMP_OF[name]
        archive = h.archive_path(pristine["store"], name, comp)
        manifest = h.manifest_path(pristine["store"], name)
        shutil.copy(archive, store / archive.name)
        shutil.copy(manifest, store / manifest.name)
        return store, store / archive.name, store / manifest.name

    return make


def verify(tools, store, name):
    return h.run_worker(tools, "verify", "--store", store, "--snapshot", name)


def assert_verify_damaged(run, *patterns):
    assert run.returncode == h.EXIT_CORRUPT, run.describe()
    assert "verify failed:" in run.stderr, run.describe()
    for p in patterns:
        assert re.search(p, run.stderr), f"{p!r} not in: {run.stderr}"


def assert_restore_refuses(tools, pristine, store, name, *patterns):
    """Restore (into a renamed database of the session server) must fail and say why."""
    run = h.run_worker(tools, "restore", "--uri-file", pristine["uri_file"], "--store", store,
                       "--snapshot", name, "--drop", "--ns-from", f"{DB}.*", "--ns-to", f"{RESTORED_DB}.*")
    pristine["client"].drop_database(RESTORED_DB)
    assert run.returncode != h.EXIT_OK, run.describe()
    assert "restore failed:" in run.stderr, run.describe()
    for p in patterns:
        assert re.search(p, run.stderr), f"{p!r} not in: {run.stderr}"
    return run


# ---- truncation --------------------------------------------------------------------------

@pytest.mark.parametrize("cut", ["3 bytes", "8 bytes", "half", "end-20", "end-4", "end-1"])
def test_truncated_zstd_archive(tools, pristine, copy, cut):
    store, archive, _ = copy("z")
    size = archive.stat().st_size
    keep = {"3 bytes": 3, "8 bytes": 8, "half": size // 2, "end-20": size - 20,
            "end-4": size - 4, "end-1": size - 1}[cut]
    h.truncate(archive, keep)
    run = verify(tools, store, "z")
    # Cut inside the frame (its last 4 bytes are the content checksum): the decompressor says
    # so; a cut in the first bytes leaves no recognisable frame at all.
    assert_verify_damaged(run, r"truncated|damaged|corrupt|not a mongodump archive")
    if cut in ("half", "end-1", "3 bytes"):
        assert_restore_refuses(tools, pristine, store, "z", r"truncated|damaged|corrupt|not a mongodump")


@pytest.mark.parametrize("cut", ["half", "end-1", "10 bytes"])
def test_truncated_uncompressed_archive(tools, pristine, copy, cut):
    store, archive, _ = copy("n")
    size = archive.stat().st_size
    keep = {"half": size // 2, "end-1": size - 1, "10 bytes": 10}[cut]
    h.truncate(archive, keep)
    run = verify(tools, store, "n")
    assert_verify_damaged(run, r"truncated", r"byte offset \d+")
    if cut == "half":
        assert_restore_refuses(tools, pristine, store, "n", r"truncated")


def test_empty_archive(tools, pristine, copy):
    store, archive, _ = copy("g")
    h.truncate(archive, 0)
    assert_verify_damaged(verify(tools, store, "g"), r"empty")


# ---- flipped bits ------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["frame header", "first block", "middle", "checksum"])
def test_flipped_bit_in_zstd_archive(tools, pristine, copy, where):
    store, archive, _ = copy("z")
    size = archive.stat().st_size
    offset = {"frame header": 4, "first block": 40, "middle": size // 2, "checksum": size - 2}[where]
    h.flip_byte(archive, offset, 0x10)
    run = verify(tools, store, "z")
    assert_verify_damaged(run, r"corrupt|damaged|mismatch|checksum")
    if where == "middle":
        assert_restore_refuses(tools, pristine, store, "z", r"corrupt|damaged|mismatch|checksum")


def test_zstd_corruption_message_points_at_the_damage(tools, pristine, copy):
    store, archive, _ = copy("z")
    size = archive.stat().st_size
    h.flip_byte(archive, size - 2, 0x10)
    run = verify(tools, store, "z")
    # zstd notices damage when it checks a block or the frame checksum: the message names the
    # span it was decoding, and the damaged byte must lie inside it.
    assert_verify_damaged(run, r"between compressed byte offsets \d+ and \d+")
    m = re.search(r"between compressed byte offsets (\d+) and (\d+)", run.stderr)
    low, high = int(m.group(1)), int(m.group(2))
    assert low <= size - 2 < high, run.stderr


def test_flipped_bit_in_gzip_archive(tools, pristine, copy):
    store, archive, _ = copy("g")
    h.flip_byte(archive, archive.stat().st_size // 2, 0x04)
    assert_verify_damaged(verify(tools, store, "g"), r"corrupt|damaged|mismatch")
    assert_restore_refuses(tools, pristine, store, "g", r"corrupt|damaged|mismatch")


def _layout(archive):
    return h.archive_layout(archive.read_bytes())


def test_flipped_byte_inside_a_document_names_namespace_and_offset(tools, pristine, copy):
    store, archive, _ = copy("n")
    layout = _layout(archive)
    docs = [i for i in layout if i.kind == "document" and i.namespace == f"{DB}.beta"]
    assert len(docs) == 300
    doc = docs[150]
    beta_end = max(i.offset for i in layout if i.namespace == f"{DB}.beta")
    # A byte of the padding string in the middle of the document: the BSON stays valid, only
    # the namespace's CRC-64 can tell.
    offset = doc.offset + doc.length - 20
    h.flip_byte(archive, offset, 0x02)
    run = verify(tools, store, "n")
    assert_verify_damaged(run, re.escape(f"namespace '{DB}.beta'"), r"byte offset \d+")
    # The damage is found where the namespace's checksum is checked: at or after the document,
    # within the namespace.
    reported = int(re.search(r"byte offset (\d+)", run.stderr).group(1))
    assert doc.offset <= reported <= beta_end, run.stderr
    run = assert_restore_refuses(tools, pristine, store, "n", re.escape(f"{DB}.beta"))
    assert run.returncode == h.EXIT_CORRUPT


def test_flipped_document_length_names_namespace_and_offset(tools, pristine, copy):
    store, archive, _ = copy("n")
    docs = [i for i in _layout(archive) if i.kind == "document" and i.namespace == f"{DB}.alpha"]
    doc = docs[len(docs) // 2]
    h.flip_byte(archive, doc.offset + 1, 0x40)  # the length word grows by 16 KiB
    run = verify(tools, store, "n")
    # Named at the document's own offset.
    assert_verify_damaged(run, re.escape(f"namespace '{DB}.alpha' at byte offset {doc.offset}:"))


def test_flipped_byte_in_prelude_metadata(tools, pristine, copy):
    store, archive, _ = copy("n")
    meta = [i for i in _layout(archive) if i.kind == "metadata" and i.namespace == f"{DB}.alpha"][0]
    data = archive.read_bytes()
    at = data.index(b"group_1", meta.offset)  # the index name inside the metadata JSON
    h.flip_byte(archive, at, 0x01)
    run = verify(tools, store, "n")
    assert_verify_damaged(run, r"SHA-256|damaged|corrupt")
    assert_restore_refuses(tools, pristine, store, "n", r"SHA-256|damaged|corrupt")


def test_flipped_byte_in_namespace_header(tools, pristine, copy):
    store, archive, _ = copy("n")
    head = [i for i in _layout(archive) if i.kind == "namespace-header" and i.namespace == f"{DB}.beta"][0]
    data = archive.read_bytes()
    at = data.index(b"beta", head.offset)
    h.flip_byte(archive, at, 0x01)  # "beta" -> "ceta": a namespace the prelude does not list
    run = verify(tools, store, "n")
    assert_verify_damaged(run, r"byte offset \d+", r"prelude|corrupt")


@pytest.mark.parametrize("where", ["first byte", "archive sha256", "a document count",
                                   "the checksum field", "the checksum value", "last byte"])
def test_flipped_byte_in_manifest(tools, pristine, copy, where):
    store, _, manifest = copy("z")
    text = manifest.read_bytes()
    if where == "first byte":
        offset = 0
    elif where == "archive sha256":
        offset = text.index(b'"sha256" : "') + 20
    elif where == "a document count":
        offset = text.index(b'"documents" : ') + len(b'"documents" : ')
    elif where == "the checksum field":
        offset = text.index(b'"manifest_sha256"') + 5
    elif where == "the checksum value":
        offset = text.index(b'"manifest_sha256" : "') + 30
    else:
        offset = len(text.rstrip(b"\n")) - 1
    h.flip_byte(manifest, offset, 0x01)
    run = verify(tools, store, "z")
    assert_verify_damaged(run, r"manifest")
    assert re.search(r"corrupt|not a mongosnap manifest|no 'manifest_sha256' field|not valid JSON",
                     run.stderr), run.stderr
    if where in ("a document count", "the checksum field"):
        assert_restore_refuses(tools, pristine, store, "z", r"manifest")


def test_archive_replaced_by_another(tools, pristine, copy):
    """A valid archive of the same data that is not the one the manifest describes."""
    store, archive, _ = copy("z")
    shutil.copy(h.archive_path(pristine["store"], "g", "gzip"), archive)
    assert_verify_damaged(verify(tools, store, "z"), r"manifest says|SHA-256")


# ---- missing pieces ----------------------------------------------------------------------

def test_missing_manifest(tools, pristine, copy):
    store, _, manifest = copy("z")
    manifest.unlink()
    for cmd in (["verify"], ["restore", "--uri-file", pristine["uri_file"]]):
        run = h.run_worker(tools, *cmd, "--store", store, "--snapshot", "z")
        assert run.returncode not in (h.EXIT_OK, h.EXIT_USAGE), run.describe()
        assert "does not exist or never completed" in run.stderr, run.describe()


def test_missing_archive(tools, pristine, copy):
    store, archive, _ = copy("z")
    archive.unlink()
    run = verify(tools, store, "z")
    assert run.returncode != h.EXIT_OK, run.describe()
    assert archive.name in run.stderr


# ---- SIGTERM -----------------------------------------------------------------------------

def test_sigterm_during_snapshot_leaves_nothing(tools, ferretdb_factory, tmp_path):
    server = ferretdb_factory(name="sigterm-source")
    # --parallel 1 dumps one collection after the other, largest first.
    h.load_simple_dataset(server.client, "slow", {"first": 6000, "second": 5000, "third": 4000}, pad=50)
    store = tmp_path / "store"
    store.mkdir()
    uri_file = h.write_uri_file(tmp_path, server.uri)
    rw = h.start_worker(tools, "snapshot", "--uri-file", uri_file, "--store", store, "--name", "stopped",
                        "--parallel", "1")
    stopped = False
    try:
        ev = rw.wait_for_event(lambda e: e.get("event") == "namespace", timeout=120)
        assert ev is not None and ev["namespace"] == "slow.first", rw.reader.lines
        # Freeze the server so the snapshot is surely mid-dump, then ask the worker to stop.
        os.kill(server.proc.pid, signal.SIGSTOP)
        stopped = True
        # The archive is being written: a temp file is in the store right now.
        assert any(f.startswith(".tmp-") for f in h.store_files(store)), h.store_files(store)
        rw.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert rw.proc.poll() is None  # still waiting for the frozen server
    finally:
        if stopped:
            os.kill(server.proc.pid, signal.SIGCONT)
    run = rw.finish(timeout=120)
    assert run.returncode == h.EXIT_CANCELLED, run.describe()
    assert "stopped" in run.stderr
    result = run.result
    assert result is not None and result["status"] == "cancelled" and result["exit_code"] == h.EXIT_CANCELLED
    assert h.store_files(store) == [], "a stopped snapshot left files behind"
    # The stopped snapshot does not exist for verify either.
    run = verify(tools, store, "stopped")
    assert run.returncode != h.EXIT_OK and "does not exist or never completed" in run.stderr


@pytest.mark.parametrize("name", ["n", "z"])
def test_bytes_appended_to_archive(tools, pristine, copy, name):
    store, archive, _ = copy(name)
    with open(archive, "ab") as f:
        f.write(b"\x00" * 7 + b"trailing garbage")
    run = verify(tools, store, name)
    assert_verify_damaged(run, r"unexpected bytes after the archive's end|manifest says|corrupt|damaged")
    assert_restore_refuses(tools, pristine, store, name, r"unexpected bytes|manifest says|corrupt|damaged")


def test_sigterm_during_restore(tools, pristine, ferretdb_factory, tmp_path):
    target = ferretdb_factory(name="sigterm-target")
    rw = h.start_worker(tools, "restore", "--uri-file", h.write_uri_file(tmp_path, target.uri),
                        "--store", pristine["store"], "--snapshot", "n", "--batch-size", "50",
                        "--parallel", "1")
    stopped = False
    try:
        # Freeze the target as soon as the first documents arrive.
        coll = target.client[DB].alpha
        h.wait_until(lambda: rw.proc.poll() is not None or coll.estimated_document_count() > 0, 60, 0.005)
        if rw.proc.poll() is not None:
            pytest.skip("the restore ended before it could be stopped")
        os.kill(target.proc.pid, signal.SIGSTOP)
        stopped = True
        rw.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
    finally:
        if stopped:
            os.kill(target.proc.pid, signal.SIGCONT)
    run = rw.finish(timeout=120)
    assert run.returncode == h.EXIT_CANCELLED, run.describe()
    assert "stopped" in run.stderr
    assert run.result["status"] == "cancelled"
    assert "part of the data" in run.stderr  # the message says the target is incomplete
