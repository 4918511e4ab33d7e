"""Cluster snapshots and restores through a mongos: the stand-in of fake_mongos.py in front of
the config server's FerretDB (no mongos can be had here). What it shows over the wire: hello's
"isdbgrid" taken for a mongos, the config part read from the config server getShardMap names,
the balancer stopped for a snapshot and for a restore and started again in every outcome, left
off when an operator had turned it off, started again after a balancerStop that failed (it may
have switched the balancer off all the same), and, when the worker is killed with the balancer
stopped, started again by the next run of the policy (the takeover)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from agent_fixtures import server_paused
from fake_mongos import FakeMongos
from test_sharded import DB, load, make_cluster, raw_docs, shard_config, worker_json
import helpers as h


def mongos_for(cfg, shards) -> FakeMongos:
    return FakeMongos(cfg.address, lambda: {"config": f"rs0/{cfg.address}",
                                            **{n: f"rs0/{s.address}" for n, s in shards.items()}})


@pytest.fixture
def cluster(ferretdb_factory, tmp_path):
    cfg, shards = make_cluster(ferretdb_factory, "ms", ["shard01", "shard02"])
    shard_config(cfg, "shard01", "shard02")
    load(shards)
    mongos = mongos_for(cfg, shards)
    mongos.uri_file = h.write_uri_file(tmp_path, mongos.uri, "mongos-uri")
    yield cfg, shards, mongos
    mongos.close()


def snapshot(tools, mongos, store, name):
    return h.run_worker(tools, "cluster-snapshot", "--uri-file", mongos.uri_file, "--store", store,
                        "--prefix", "cl", "--name", name, "--json")


def test_balancer_through_a_mongos(tools, cluster, ferretdb_factory, tmp_path):
    cfg, shards, mongos = cluster
    store = tmp_path / "store"
    store.mkdir()
    res = worker_json(snapshot(tools, mongos, store, "s1"))
    assert mongos.calls == ["balancerstatus", "balancerstop", "balancerstart"], mongos.calls
    assert mongos.balancer == "full"
    assert res["balancer_stopped"] is True, res
    manifest = json.loads((store / "cl" / "s1.cluster.json").read_text())
    assert manifest["balancer_stopped"] is True
    assert {p["shard"] for p in manifest["parts"]} == {"shard01", "shard02", "config"}

    # turned off by an operator: left off, never started
    mongos.balancer, mongos.calls = "off", []
    worker_json(snapshot(tools, mongos, store, "s2"))
    assert mongos.calls == ["balancerstatus"] and mongos.balancer == "off", mongos.calls
    assert json.loads((store / "cl" / "s2.cluster.json").read_text())["balancer_stopped"] is False

    # a balancerStop that timed out, the balancer off all the same: the snapshot fails saying
    # so, stores nothing, and the balancer is started again
    mongos.balancer, mongos.calls = "full", []
    mongos.fail_stop = mongos.stop_anyway = True
    run = snapshot(tools, mongos, store, "s3")
    assert run.returncode != 0 and "balancerStop" in run.output, run.describe()
    assert mongos.calls[-1] == "balancerstart" and mongos.balancer == "full", mongos.calls
    assert not (store / "cl" / "s3.cluster.json").exists()
    assert not [p for p in (store / "cl").glob("s3.parts/*") if p.is_file()]
    mongos.fail_stop = mongos.stop_anyway = False

    # a restore through the target's mongos: its balancer stopped while the shards are
    # rewritten, started again after
    tcfg, tshards = make_cluster(ferretdb_factory, "mst", ["shard01", "shard02"])
    tmongos = mongos_for(tcfg, tshards)
    turi = h.write_uri_file(tmp_path, tmongos.uri, "tmongos-uri")
    out = worker_json(h.run_worker(tools, "cluster-restore", "--uri-file", turi, "--store", store,
                                   "--snapshot", "cl/s1", "--json"))
    assert out["shards"] == 2
    assert tmongos.calls == ["balancerstatus", "balancerstop", "balancerstart"], tmongos.calls
    assert tmongos.balancer == "full"
    for name in ("shard01", "shard02"):
        assert raw_docs(tshards[name], f"{DB}.orders") == raw_docs(shards[name], f"{DB}.orders")
    assert tcfg.client.config.databases.find_one({"_id": DB})["primary"] == "shard01"
    # one shard's part alone is refused through a mongos (it would be routed)
    lone = h.run_worker(tools, "restore", "--uri-file", turi, "--store", store, "--snapshot",
                        "cl/s1", "--part", "shard01")
    assert lone.returncode != 0 and "a part alone goes into a replica set" in lone.output, \
        lone.describe()
    tmongos.close()


def killed_with_the_balancer_stopped(tools, mongos, shards, store, name):
    """A cluster snapshot SIGKILLed once it stopped the balancer (shard02 hung, so that it waits
    at the barrier): nobody can start the balancer again."""
    with server_paused(shards["shard02"]):
        worker = h.start_worker(tools, "cluster-snapshot", "--uri-file", mongos.uri_file,
                                "--store", store, "--prefix", "cl", "--name", name)
        deadline = time.monotonic() + 30
        while mongos.balancer != "off" and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        worker.proc.send_signal(signal.SIGKILL)
        return worker.finish()


def test_balancer_started_again_after_the_worker_was_killed(tools, cluster, tmp_path):
    """SIGKILL leaves no chance to start the balancer: the snapshot leaves a marker beside its
    manifest first, and the next cluster snapshot of the policy (or `cluster-balancer
    --resume`, which the agent runs when a cluster snapshot's worker died) starts the balancer
    again before anything else and removes the marker."""
    cfg, shards, mongos = cluster
    store = tmp_path / "store"
    store.mkdir()
    killed = killed_with_the_balancer_stopped(tools, mongos, shards, store, "killed")
    assert mongos.balancer == "off", (mongos.calls, killed.describe())  # nobody could start it
    markers = list((store / "cl").glob("*.balancer.json"))
    assert [m.name for m in markers] == ["killed.balancer.json"], markers
    assert "mongodb://" not in markers[0].read_text()  # no address, no secret: the policy's own

    # the mongos unreachable: nothing is known, the marker stays for the next try
    dead = h.write_uri_file(tmp_path, "mongodb://127.0.0.1:9/?connectTimeoutMS=500&serverSelectionTimeoutMS=1000",
                            "dead-uri")
    run = h.run_worker(tools, "cluster-balancer", "--uri-file", dead, "--store", store, "--prefix",
                       "cl", "--resume", "--name", "killed")
    assert run.returncode != 0, run.describe()
    assert (store / "cl" / "killed.balancer.json").exists()
    # for that snapshot alone, while another snapshot of the policy has the balancer stopped
    # (its marker): not started under it; only the dead snapshot's marker goes
    (store / "cl" / "other.balancer.json").write_text("{}")
    mongos.calls = []
    h.expect_ok(h.run_worker(tools, "cluster-balancer", "--uri-file", mongos.uri_file, "--store",
                             store, "--prefix", "cl", "--resume", "--name", "killed"))
    assert mongos.calls == [] and mongos.balancer == "off", mongos.calls
    assert sorted(m.name for m in (store / "cl").glob("*.balancer.json")) == ["other.balancer.json"]
    # the takeover of every marker (what the next snapshot does first)
    mongos.calls = []
    run = h.expect_ok(h.run_worker(tools, "cluster-balancer", "--uri-file", mongos.uri_file,
                                   "--store", store, "--prefix", "cl", "--resume"))
    assert mongos.calls == ["balancerstart"] and mongos.balancer == "full", (mongos.calls, run.output)
    assert not list((store / "cl").glob("*.balancer.json"))
    # nothing left to take over: nothing done
    mongos.calls = []
    h.expect_ok(h.run_worker(tools, "cluster-balancer", "--uri-file", mongos.uri_file, "--store",
                             store, "--prefix", "cl", "--resume"))
    assert mongos.calls == []

    # killed again; this time the next snapshot takes over first
    killed = killed_with_the_balancer_stopped(tools, mongos, shards, store, "killed2")
    assert mongos.balancer == "off", (mongos.calls, killed.describe())
    mongos.calls = []
    worker_json(snapshot(tools, mongos, store, "next"))
    assert mongos.calls == ["balancerstart", "balancerstatus", "balancerstop", "balancerstart"], \
        mongos.calls
    assert mongos.balancer == "full"
    assert not list((store / "cl").glob("*.balancer.json"))
