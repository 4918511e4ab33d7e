"""Three smaller findings of the adversarial hour: the worker says exactly what it does.

  * a snapshot name is checked exactly as the message says (letters, digits, '-', '_' and '.',
    not starting with '.'): 'a b' and '.hidden' are refused (exit 2), nothing is stored;
  * remove reports what it removed: keys that are not there (or name a directory) are "not
    found", not "removed";
  * a zstd frame with a window beyond the decoder's limit is not "damaged" (exit 3) but not
    supported (exit 2), and the message names the window and what to do.
"""

from __future__ import annotations

import json
import subprocess

import pytest

import helpers as h


@pytest.mark.parametrize("name", ["a b", ".hidden", "x/y", "", "a\tb", "é"])
def test_snapshot_names_are_checked_as_the_message_says(tools, fresh_db, tmp_path, name):
    fresh_db.client.shop.items.insert_one({"_id": 1})
    store = tmp_path / "store"
    store.mkdir()
    uri_file = h.write_uri_file(tmp_path, fresh_db.uri)
    run = h.run_worker(tools, "snapshot", "--uri-file", uri_file, "--store", store, "--name", name)
    assert run.returncode == h.EXIT_USAGE, run.describe()
    assert "letters, digits" in run.stderr
    assert list(store.iterdir()) == []


def test_snapshot_name_with_dots_inside_is_fine(tools, fresh_db, tmp_path):
    fresh_db.client.shop.items.insert_one({"_id": 1})
    store = tmp_path / "store"
    store.mkdir()
    uri_file = h.write_uri_file(tmp_path, fresh_db.uri)
    h.snapshot(tools, uri_file, store, "nightly.2026-12-06_a")


def test_remove_reports_what_it_removed(tools, tmp_path):
    store = tmp_path / "store"
    (store / "p").mkdir(parents=True)
    (store / "p" / "one").write_bytes(b"1")
    (store / "dir" / "inside").mkdir(parents=True)
    run = h.run_worker(tools, "remove", "--store", store, "--key", "p/one", "--key", "p/missing",
                       "--key", "dir")
    assert run.returncode == h.EXIT_OK, run.describe()
    assert "removed 1 object(s); 2 not found" in run.stdout, run.stdout
    assert not (store / "p" / "one").exists()
    assert (store / "dir" / "inside").is_dir()
    run = h.run_worker(tools, "remove", "--store", store, "--key", "dir", "--json")
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["removed"] == 0 and result["not_found"] == 1 and result["processed"] == 1, result


def test_zstd_window_beyond_the_limit_is_unsupported_not_damaged(tools, fresh_db, tmp_path):
    client = fresh_db.client
    client.shop.items.insert_many([{"_id": i, "pad": "x" * 200} for i in range(200)])
    uri_file = h.write_uri_file(tmp_path, fresh_db.uri)
    plain = tmp_path / "plain"
    plain.mkdir()
    h.snapshot(tools, uri_file, plain, "p", "--compression", "none")
    archive = h.archive_path(plain, "p", "none")
    long_window = tmp_path / "long.archive.zst"
    # Through a pipe: with the size unknown, zstd keeps the whole 1 GiB window in the frame.
    with open(archive, "rb") as src, open(long_window, "wb") as dst:
        subprocess.run(["zstd", "-q", "--long=30", "-c"], stdin=src, stdout=dst, check=True)
    run = h.run_worker(tools, "restore", "--uri-file", uri_file, "--archive", long_window,
                       "--ns-from", "shop.*", "--ns-to", "copy.*")
    assert run.returncode == h.EXIT_USAGE, run.describe()
    assert "1024 MiB window" in run.stderr and "not damaged" in run.stderr, run.stderr
    assert "zstd -d --long=31" in run.stderr
    assert "copy" not in client.list_database_names()
