"""Faults between mongosnap and the MongoDB-compatible server: mongosnap-worker (and the agent)
talking to FerretDB through toxiproxy. Every run must end in a snapshot that verifies and
restores to the same data, or in a clear failure: a non-zero exit, a message that names the
server (without secrets), no manifest, no temporary file left in the store.

  latency 100 ms each way                         -> completes
  bandwidth 300 KB/s                              -> completes
  connection cut mid-dump (limit_data downstream) -> clear failure, nothing stored
  server gone mid-dump, back after 2 s            -> clear failure; the next run completes
  black hole (timeout toxic), socketTimeoutMS=3000 -> clear failure within a bound
  connection cut mid-restore                      -> clear failure; a rerun with --drop restores
  the agent: a policy through the proxy, the server down for its snapshot -> failed with the
  server named; back up -> the next snapshot completes and verifies

The URIs go to the proxy with directConnection=true: with replicaSet= the driver would learn the
server's own address from hello and bypass the proxy.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import helpers as h
from agent_fixtures import *  # noqa: F401,F403
from agent_fixtures import SNAPSHOT_IFACE
from agent_fixtures import decode as snapshot_id
from toxiproxy_fixtures import *  # noqa: F401,F403
from toxiproxy_fixtures import Proxy

DB = "faults"
COLLECTIONS = ("orders", "users", "events")
DOCS = 2000  # per collection, ~230 bytes each: about 1.4 MB in all
RUN_TIMEOUT = 90.0
CLEAR_FAILURE_EXITS = (h.EXIT_FAILURE, h.EXIT_UNREACHABLE)


@pytest.fixture
def source(ferretdb_factory):
    server = ferretdb_factory("faults-source")
    for name in COLLECTIONS:
        server.client[DB][name].insert_many(
            [{"i": i, "name": f"{name}-{i}", "pad": "x" * 200} for i in range(DOCS)])
    return server


@pytest.fixture
def mongo_proxy(toxiproxy, source):
    proxy = Proxy(toxiproxy, f"ferretdb-{id(source):x}", source.address).create()
    try:
        yield proxy
    finally:
        proxy.delete()


def proxied_uri(proxy: Proxy, **options: str) -> str:
    query = "&".join(["directConnection=true"] + [f"{k}={v}" for k, v in options.items()])
    return f"mongodb://127.0.0.1:{proxy.port}/?{query}"


def store_of(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    store.mkdir(exist_ok=True)
    return store


def snapshot(tools, tmp_path: Path, uri: str, name: str) -> h.WorkerRun:
    store_of(tmp_path)
    uri_file = h.write_uri_file(tmp_path, uri, name=f"uri-{name}")
    return h.run_worker(tools, "snapshot", "--uri-file", uri_file, "--store", tmp_path / "store",
                        "--name", name, "-v", timeout=RUN_TIMEOUT)


def assert_verified_and_restorable(tools, tmp_path: Path, name: str, source, target) -> None:
    store = tmp_path / "store"
    h.expect_ok(h.run_worker(tools, "verify", "--store", store, "--snapshot", name))
    uri_file = h.write_uri_file(tmp_path, target.uri, name=f"target-{name}")
    h.drop_user_dbs(target.client)
    h.restore(tools, uri_file, "--store", store, "--snapshot", name)
    assert h.data_digest(target.client, [DB]) == h.data_digest(source.client, [DB])


def assert_clear_failure(run: h.WorkerRun, tmp_path: Path, name: str, server_address: str):
    assert run.returncode in CLEAR_FAILURE_EXITS, run.describe()
    text = run.stderr
    print(f"{name}: exit {run.returncode}: {text.strip().splitlines()[-1] if text.strip() else ''}")
    # The message says which server and what happened, in words.
    assert server_address in text or "127.0.0.1" in text, text
    assert any(w in text for w in ("connection", "socket", "reach", "closed", "timed out",
                                   "timeout", "No suitable servers", "refused")), text
    store = tmp_path / "store"
    files = h.store_files(store) if store.exists() else []
    assert not h.manifest_path(store, name).exists(), files
    assert not [f for f in files if ".tmp" in f], files


def test_latency_and_bandwidth_still_complete(tools, tmp_path, source, mongo_proxy,
                                             ferretdb_factory):
    target = ferretdb_factory("faults-target")
    mongo_proxy.latency(100, stream="downstream")
    mongo_proxy.latency(100, stream="upstream")
    t0 = time.monotonic()
    h.expect_ok(snapshot(tools, tmp_path, proxied_uri(mongo_proxy), "slow"))
    slow = time.monotonic() - t0
    mongo_proxy.clear()
    mongo_proxy.bandwidth(300)
    t0 = time.monotonic()
    h.expect_ok(snapshot(tools, tmp_path, proxied_uri(mongo_proxy), "narrow"))
    narrow = time.monotonic() - t0
    print(f"latency 100 ms each way: {slow:.1f}s; 300 KB/s: {narrow:.1f}s")
    # Plausible: about 1.4 MB through at most three connections (one per collection) of
    # 300 KB/s each cannot take under 1.5 s.
    assert narrow > 1.5, narrow
    for name in ("slow", "narrow"):
        assert_verified_and_restorable(tools, tmp_path, name, source, target)


def test_connection_cut_mid_dump_fails_clearly(tools, tmp_path, source, mongo_proxy):
    # Every connection is closed after 300 kB from the server: the dump cannot get through.
    mongo_proxy.limit_data(300_000, stream="downstream")
    run = snapshot(tools, tmp_path, proxied_uri(mongo_proxy), "cut")
    assert_clear_failure(run, tmp_path, "cut", f"127.0.0.1:{mongo_proxy.port}")


def test_server_gone_mid_dump_then_back(tools, tmp_path, source, mongo_proxy, ferretdb_factory):
    target = ferretdb_factory("faults-target")
    mongo_proxy.bandwidth(200)  # slow enough to be cut in the middle
    rw = h.start_worker(tools, "snapshot", "--uri-file",
                        h.write_uri_file(tmp_path, proxied_uri(mongo_proxy), name="uri-gone"),
                        "--store", store_of(tmp_path), "--name", "gone", "-v")
    rw.wait_for_event(lambda ev: ev.get("event") == "progress" and ev.get("items_done", 0) > 0,
                      timeout=30)
    # The server goes away (every connection reset, new ones refused) and comes back.
    mongo_proxy.server.request("POST", f"/proxies/{mongo_proxy.name}", {"enabled": False})
    timer = threading.Timer(2.0, lambda: mongo_proxy.server.request(
        "POST", f"/proxies/{mongo_proxy.name}", {"enabled": True}))
    timer.start()
    run = rw.finish(RUN_TIMEOUT)
    timer.join()
    assert_clear_failure(run, tmp_path, "gone", f"127.0.0.1:{mongo_proxy.port}")
    mongo_proxy.clear()
    h.expect_ok(snapshot(tools, tmp_path, proxied_uri(mongo_proxy), "after"))
    assert_verified_and_restorable(tools, tmp_path, "after", source, target)


def test_black_hole_fails_within_the_socket_timeout(tools, tmp_path, source, mongo_proxy):
    # Connected, then nothing comes back: without socketTimeoutMS the driver waits its default
    # 5 minutes per read; with it the worker gives up in seconds.
    rw = h.start_worker(tools, "snapshot", "--uri-file",
                        h.write_uri_file(tmp_path, proxied_uri(mongo_proxy, socketTimeoutMS="3000"),
                                         name="uri-hole"),
                        "--store", store_of(tmp_path), "--name", "hole", "-v")
    mongo_proxy.bandwidth(200)
    rw.wait_for_event(lambda ev: ev.get("event") == "progress" and ev.get("items_done", 0) > 0,
                      timeout=30)
    mongo_proxy.clear()
    t0 = time.monotonic()
    mongo_proxy.timeout(0, stream="downstream")
    run = rw.finish(RUN_TIMEOUT)
    took = time.monotonic() - t0
    print(f"black hole: failed {took:.1f}s after the server went silent")
    assert_clear_failure(run, tmp_path, "hole", f"127.0.0.1:{mongo_proxy.port}")
    assert took < 45, took


def test_connection_cut_mid_restore_then_rerun(tools, tmp_path, source, ferretdb_factory,
                                               toxiproxy):
    target = ferretdb_factory("faults-target")
    h.expect_ok(snapshot(tools, tmp_path, source.uri, "whole"))
    proxy = Proxy(toxiproxy, "ferretdb-target", target.address).create()
    try:
        proxy.limit_data(200_000, stream="upstream")  # inserts cut after 200 kB
        uri_file = h.write_uri_file(tmp_path, proxied_uri(proxy), name="uri-target")
        run = h.run_worker(tools, "restore", "--uri-file", uri_file, "--store",
                           tmp_path / "store", "--snapshot", "whole", "-v", timeout=RUN_TIMEOUT)
        assert run.returncode in CLEAR_FAILURE_EXITS, run.describe()
        assert f"127.0.0.1:{proxy.port}" in run.stderr or "127.0.0.1" in run.stderr, run.stderr
        proxy.clear()
        h.expect_ok(h.run_worker(tools, "restore", "--uri-file", uri_file, "--store",
                                 tmp_path / "store", "--snapshot", "whole", "--drop",
                                 timeout=RUN_TIMEOUT))
        assert h.data_digest(target.client, [DB]) == h.data_digest(source.client, [DB])
    finally:
        proxy.delete()


def test_agent_snapshot_with_the_server_down_then_up(agent, source, mongo_proxy):
    agent.write_policy("p", proxied_uri(mongo_proxy, serverSelectionTimeoutMS="2000"))
    agent.start()
    mongo_proxy.server.request("POST", f"/proxies/{mongo_proxy.name}", {"enabled": False})
    path = agent.take_snapshot("p")
    assert agent.wait_snapshot_state(path, ("completed", "failed", "interrupted")) == "failed"
    row = agent.snapshot(snapshot_id(path))
    assert f"127.0.0.1:{mongo_proxy.port}" in row["error"], row
    mongo_proxy.server.request("POST", f"/proxies/{mongo_proxy.name}", {"enabled": True})
    mongo_proxy.latency(50)
    path2 = agent.take_snapshot("p")
    assert agent.wait_snapshot_state(path2, ("completed", "failed", "interrupted")) == "completed"
    agent.call(path2, SNAPSHOT_IFACE, "Verify")
    agent.wait_for(lambda: agent.prop(path2, SNAPSHOT_IFACE, "VerifyState") == "passed",
                   "verified", timeout=60)
    leftovers = [p.name for p in (agent.store / "p").iterdir() if ".tmp" in p.name]
    assert not leftovers, leftovers
