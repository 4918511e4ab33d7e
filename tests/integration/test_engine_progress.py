"""The --progress-fd stream: one JSON object per line; "progress" lines whose percent stays
within 0..100 and never goes down, ending at 100 in phase "done" on success; a "namespace"
line per collection; a "result" line last.  Checked for snapshot, restore and verify, for a
failed run, and for a snapshot of a collection that grows while it is copied.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

import helpers as h

PHASES = {"connect", "prelude", "dump", "oplog", "commit", "restore", "indexes", "replay", "verify", "done"}
DATASET = {"prog": {"alpha": 30000, "beta": 4000, "gamma": 1500, "empty": 0},
           "prog_other": {"x": 700, "y": 1}}


def check_stream(run: h.WorkerRun, success: bool = True) -> list:
    """The checks every progress stream must pass; returns the parsed events."""
    assert run.progress_lines, f"nothing on the progress fd: {run.describe()}"
    events = []
    for line in run.progress_lines:
        ev = json.loads(line)  # every line is a JSON object
        assert isinstance(ev, dict) and isinstance(ev.get("event"), str), line
        assert isinstance(ev.get("elapsed_usec"), int) and ev["elapsed_usec"] >= 0, line
        events.append(ev)
    progress = [e for e in events if e["event"] == "progress"]
    if success:
        assert progress, "no progress lines"
    last_pct = -1.0
    for e in progress:
        assert e["phase"] in PHASES, e
        assert 0.0 <= e["percent"] <= 100.0, e
        assert e["percent"] >= last_pct, f"percent went down from {last_pct} to {e['percent']}: {e}"
        last_pct = e["percent"]
        assert 0 <= e["items_done"] and 0 <= e["items_total"], e
    # The result is the very last line.
    assert events[-1]["event"] == "result", events[-1]
    assert sum(1 for e in events if e["event"] == "result") == 1
    result = events[-1]
    if success:
        assert result["status"] == "ok", result
        assert progress[-1]["percent"] == 100.0 and progress[-1]["phase"] == "done", progress[-1]
        assert progress[-1]["items_done"] == progress[-1]["items_total"], progress[-1]
    else:
        assert result["status"] in ("failed", "cancelled") and result.get("message"), result
        assert all(e["percent"] < 100.0 and e["phase"] != "done" for e in progress), progress[-1]
    return events


@pytest.fixture(scope="module")
def dataset(ferretdb, tmp_path_factory):
    client = ferretdb.client
    h.drop_user_dbs(client)
    for coll in client.local.list_collection_names():
        client.local.drop_collection(coll)
    for db, colls in DATASET.items():
        h.load_simple_dataset(client, db, colls, pad=150)
    work = tmp_path_factory.mktemp("progress")
    store = work / "store"
    store.mkdir()
    return {"server": ferretdb, "store": store, "uri_file": h.write_uri_file(work, ferretdb.uri),
            "total": sum(n for colls in DATASET.values() for n in colls.values())}


@pytest.fixture(scope="module")
def snapshot_run(tools, dataset):
    # --parallel 1 makes the dump last long enough for several progress ticks.
    return h.snapshot(tools, dataset["uri_file"], dataset["store"], "p", "--parallel", "1", progress=True)


def test_snapshot_progress_stream(snapshot_run, dataset):
    events = check_stream(snapshot_run)
    progress = [e for e in events if e["event"] == "progress"]
    # At least one report from the middle of the dump, besides the final one; how many depends
    # on the machine's speed, so the count is not asserted.
    assert len(progress) >= 2, "expected ticks during the dump"
    assert any(e["phase"] == "dump" and 0 < e["items_done"] < e["items_total"] for e in progress), progress
    assert any(e["phase"] == "dump" for e in progress)
    assert progress[-1]["items_done"] == dataset["total"]
    assert progress[-1]["bytes_written"] == h.archive_path(dataset["store"], "p").stat().st_size
    result = events[-1]
    assert result["documents"] == dataset["total"] and result["archive"] == "p.archive.zst"
    # A namespace line for every collection, once, with its document count.
    namespaces = [e for e in events if e["event"] == "namespace"]
    got = {e["namespace"]: e["documents"] for e in namespaces}
    assert len(namespaces) == len(got)
    assert got == {f"{db}.{c}": n for db, colls in DATASET.items() for c, n in colls.items()}
    # Namespace lines come before the end of the run.
    assert max(events.index(e) for e in namespaces) < events.index(progress[-1])


def test_restore_progress_stream(tools, dataset, snapshot_run, ferretdb_factory, tmp_path):
    target = ferretdb_factory(name="progress-target")
    run = h.restore(tools, h.write_uri_file(tmp_path, target.uri), "--store", dataset["store"],
                    "--snapshot", "p", progress=True)
    events = check_stream(run)
    progress = [e for e in events if e["event"] == "progress"]
    assert progress[-1]["items_done"] == dataset["total"]
    assert {e["phase"] for e in progress} <= {"connect", "prelude", "restore", "indexes", "replay", "done"}
    assert events[-1]["documents"] == dataset["total"]


def test_verify_progress_stream(tools, dataset, snapshot_run):
    run = h.expect_ok(h.run_worker(tools, "verify", "--store", dataset["store"], "--snapshot", "p",
                                   progress=True))
    events = check_stream(run)
    assert events[-1]["documents"] == dataset["total"]


def test_failed_run_progress_stream(tools, dataset, snapshot_run, tmp_path):
    # The name is taken: the snapshot fails before it starts (a result line only).
    run = h.run_worker(tools, "snapshot", "--uri-file", dataset["uri_file"], "--store", dataset["store"],
                       "--name", "p", progress=True)
    assert run.returncode == h.EXIT_FAILURE, run.describe()
    events = check_stream(run, success=False)
    assert "already exists" in events[-1]["message"] and events[-1]["exit_code"] == h.EXIT_FAILURE
    # The server is unreachable: it fails while connecting.
    uri_file = h.write_uri_file(tmp_path, "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=1000")
    run = h.run_worker(tools, "snapshot", "--uri-file", uri_file, "--store", dataset["store"],
                       "--name", "never", progress=True)
    assert run.returncode == h.EXIT_UNREACHABLE, run.describe()
    events = check_stream(run, success=False)
    assert [e["phase"] for e in events if e["event"] == "progress"] == ["connect"]
    assert events[-1]["exit_code"] == h.EXIT_UNREACHABLE


def test_snapshot_percent_never_decreases_when_a_collection_grows(tools, ferretdb_factory, tmp_path):
    server = ferretdb_factory(name="progress-grow")
    client = server.client
    # --parallel 1 takes the collections largest (by count) first: big, grow, small.
    h.load_simple_dataset(client, "g", {"big": 3000, "grow": 2000, "small": 1000}, pad=50)
    store = tmp_path / "store"
    store.mkdir()
    rw = h.start_worker(tools, "snapshot", "--uri-file", h.write_uri_file(tmp_path, server.uri),
                        "--store", store, "--name", "g", "--parallel", "1",
                        # ticks every 50 ms, so that one lands while the grown part is read
                        # (at the default 500 ms it sometimes did not, and the test skipped)
                        "--progress-interval-ms", "50")
    frozen = []
    try:
        # The archive's temp file appears once the prelude (with its estimated counts) is done:
        # freeze the worker there, and let "grow" grow well past its estimate (its new documents
        # are read last: their _ids sort last; they are 2 KB each, so reading them takes
        # long enough for progress ticks).
        assert h.wait_until(lambda: any(f.startswith(".tmp-") for f in h.store_files(store)), 60, 0.002)
        rw.proc.send_signal(signal.SIGSTOP)
        frozen.append("worker")
        for k in range(0, 12_000, 2_000):
            client.g.grow.insert_many([{"_id": 10_000 + i, "late": "L" * 2000} for i in range(k, k + 2_000)],
                                      ordered=False)
        rw.proc.send_signal(signal.SIGCONT)
        frozen.remove("worker")
        # Once "grow" is copied, freeze the server so a progress tick shows the new total while
        # "small" is still to be read.
        ev = rw.wait_for_event(lambda e: e.get("event") == "namespace" and e["namespace"] == "g.grow", 120)
        assert ev is not None and ev["documents"] == 14_000
        os.kill(server.proc.pid, signal.SIGSTOP)
        frozen.append("server")
        time.sleep(1.2)
    finally:
        if "worker" in frozen:
            rw.proc.send_signal(signal.SIGCONT)
        if "server" in frozen:
            os.kill(server.proc.pid, signal.SIGCONT)
    run = h.expect_ok(rw.finish())
    events = run.events
    grow_done = next(i for i, e in enumerate(events) if e.get("namespace") == "g.grow" and e["event"] == "namespace")
    # A tick while the new documents were read: any after 3000 + 2000 + 700 documents shows
    # more than the 17000 / (6000 + 12000) the total becomes when "grow" ends ...
    before = [e for e in events[:grow_done] if e["event"] == "progress" and e["items_done"] > 5700]
    # ... and one after "grow" ended, with "small" still to go.
    after = [e for e in events[grow_done:] if e["event"] == "progress" and e["phase"] == "dump"]
    assert before and after, f"no progress tick at the right moments (before={len(before)}, after={len(after)})"
    check_stream(run)
