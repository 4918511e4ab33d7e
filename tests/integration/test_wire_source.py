"""bench/wire-source, the benchmark source (not a database), answers the tools truthfully.

bench/tool-bench's figures are only worth something if wire-source serves what it says and
checks what it is sent. Here, on a small dataset: its _ids increase in _id order and its
_id ranges select what a client-side filter of the full listing does; a dataset scaled past
its pool repeats documents with new _ids; and the round trips the benchmark measures
(mongosnap snapshot -> restore, split into _id ranges or not; mongodump -> mongorestore) leave
in the target exactly what the source served, by wire-source's own digest. A document damaged
on its way in is refused, not counted.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import time
from pathlib import Path

import bson
import pymongo
import pytest

import helpers as h
from conftest import BUILD_DIR, _die_with_parent

WIRE = BUILD_DIR / "bench" / "wire-source" / "wire-source"


class Wire:
    def __init__(self, tmp: Path, name: str, *args: str):
        port_file = tmp / f"{name}.port"
        self.log = open(tmp / f"{name}.log", "wb")
        self.proc = subprocess.Popen(_die_with_parent([str(WIRE), "--port-file", str(port_file), *args]),
                                     stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not port_file.exists():
            assert self.proc.poll() is None and time.monotonic() < deadline, f"wire-source {args} did not start"
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        self.uri = f"mongodb://127.0.0.1:{self.port}/?directConnection=true"
        self.uri_file = h.write_uri_file(tmp, f"mongodb://127.0.0.1:{self.port}/", f"{name}-uri")
        self.client = pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=10000)

    def digest(self):
        return sorted(self.client.admin.command("benchDigest")["collections"], key=lambda c: c["ns"])

    def stop(self):
        self.client.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture
def wire(tmp_path):
    if not WIRE.exists():
        pytest.fail(f"no {WIRE} (built with -Dtests=true; run scripts/check)", pytrace=False)
    started = []

    def start(name, *args):
        w = Wire(tmp_path, name, *args)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


def test_ids_increase_and_ranges_select_what_a_filter_would(wire):
    src = wire("src", "--scale", "0.01")
    for db, coll in [("app", "users"), ("app", "orders"), ("app", "products"), ("app", "sessions"),
                     ("logs", "metrics"), ("logs", "audit")]:
        c = src.client[db][coll]
        ids = [d["_id"] for d in c.find({}, {"_id": 1}).sort("_id", 1)]
        assert len(ids) == c.database.command("count", coll)["n"] > 10
        keys = [bson.encode({"k": i})[4:] for i in ids]  # same type throughout: bytes order is not
        assert len(set(keys)) == len(ids), f"{db}.{coll}: repeated _ids"
        # what the server says lies in a range is what the full listing has there
        for lo, hi in [(0, 5), (3, len(ids) // 2), (len(ids) // 3, len(ids)), (len(ids) - 1, len(ids))]:
            got = [d["_id"] for d in c.find({"_id": {"$gte": ids[lo], "$lt": ids[hi]}} if hi < len(ids)
                                            else {"_id": {"$gte": ids[lo]}}).sort("_id", 1)]
            assert got == ids[lo:hi], (db, coll, lo, hi)
            assert [d["_id"] for d in c.find({"_id": {"$not": {"$gte": ids[lo]}}})] == ids[:lo]
        assert [d["_id"] for d in c.find({"_id": {"$gt": ids[2], "$lte": ids[4]}})] == ids[3:5]
        assert [d["_id"] for d in c.find().sort("_id", -1).limit(3)] == ids[::-1][:3]
        assert [d["_id"] for d in c.find({}, {"_id": 1}).sort("_id", 1).skip(7).limit(1)] == [ids[7]]


def test_scaled_past_the_pool_repeats_documents_with_new_ids(wire):
    one = wire("one", "--scale", "0.01")
    three = wire("three", "--scale", "0.03", "--pool-scale", "0.01")
    d1 = {c["ns"]: c for c in one.digest()}
    d3 = {c["ns"]: c for c in three.digest()}
    for ns, c in d1.items():
        assert d3[ns]["count"] == 3 * c["count"], ns
        assert d3[ns]["bytes"] == 3 * c["bytes"], ns
    a = list(one.client.app.orders.find().sort("_id", 1).limit(2))
    n = d1["app.orders"]["count"]
    b = list(three.client.app.orders.find().sort("_id", 1).skip(n).limit(2))
    for x, y in zip(a, b):
        assert x["_id"] != y["_id"]
        assert {k: v for k, v in x.items() if k != "_id"} == {k: v for k, v in y.items() if k != "_id"}


@pytest.mark.parametrize("split", [False, True], ids=["one-cursor", "split"])
def test_mongosnap_round_trip(tools, wire, tmp_path, split):
    src = wire("src", "--scale", "0.03", "--pool-scale", "0.01")
    tgt = wire("tgt", "--target")
    store = tmp_path / "store"
    store.mkdir()
    extra = ["--split-min", "64KiB" if split else "0", "--parallel", "4"]
    run = h.snapshot(tools, src.uri_file, store, "s", "--no-oplog", *extra)
    assert ("parts by _id range" in run.output) == split, run.output[-2000:]
    h.restore(tools, tgt.uri_file, "--store", store, "--snapshot", "s")
    assert tgt.digest() == src.digest()


def test_stock_tools_round_trip(tools, wire, tmp_path):
    src = wire("src", "--scale", "0.02")
    tgt = wire("tgt", "--target")
    archive = tmp_path / "dump.archive"
    tools.run("mongodump", "--uri", src.uri, f"--archive={archive}")
    cp = tools.run("mongorestore", "--uri", tgt.uri, f"--archive={archive}")
    assert "0 document(s) failed to restore" in cp.stderr, cp.stderr[-2000:]
    assert tgt.digest() == src.digest()


def test_damaged_insert_is_refused_not_counted(wire):
    tgt = wire("tgt", "--target")
    doc = bson.encode({"_id": 1, "v": "x"})
    bad = bytearray(doc)
    bad[4] = 0x77  # an element type that does not exist
    body = bson.encode({"insert": "c", "$db": "d"})
    seq = struct.pack("<i", 4 + 10 + len(bad)) + b"documents\x00" + bytes(bad)
    msg = struct.pack("<I", 0) + b"\x00" + body + b"\x01" + seq
    with socket.create_connection(("127.0.0.1", tgt.port)) as s:
        s.sendall(struct.pack("<iiii", 16 + len(msg), 1, 0, 2013) + msg)
        head = s.recv(16)
        n = struct.unpack("<i", head[:4])[0]
        rest = b""
        while len(rest) < n - 16:
            rest += s.recv(n - 16 - len(rest))
    reply = bson.decode(rest[5:])
    assert reply["ok"] == 0 and "not valid BSON" in reply["errmsg"], reply
    assert tgt.digest() == []
