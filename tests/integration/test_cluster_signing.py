"""What an agent takes from the cluster database it shares with the other nodes' agents.

With [Cluster] SigningKeyCredential= every agent signs the records and commands it writes and
takes only what is signed with the same key: commands to delete a snapshot written by anyone
else (unsigned, signed with another key, a day old, from the future, addressed to another node)
are removed and not carried out, and records written by anyone else are neither listed nor
adopted. Whatever the key, a record naming another snapshot's files is refused: the node it
names would remove those files when it expires the record.

The signatures are computed here in Python from the encoding cluster/record-mac.c documents,
so a record this file signs and the agent accepts shows both sides agree on it; the unit test
tests/unit/test-record-mac.c covers every field.
"""

from __future__ import annotations

import time
from pathlib import Path

from bson import Int64, ObjectId

from agent_fixtures import SNAPSHOT_IFACE, decode
from cluster_mac import DAY_USEC, KEY, command_mac, snapshot_mac
from test_cluster import HEARTBEAT, agent_config, cluster, state_on  # noqa: F401


def now_usec() -> int:
    return int(time.time() * 10**6)


def command(task: str, *, key: bytes = b"", created: int = 0, to: str = "node-a",
            signed_for: str = "") -> dict:
    doc = {"_id": ObjectId(), "node": signed_for or to, "op": "delete-snapshot",
           "policy": "nightly", "task": task, "from": "node-b",
           "created": Int64(created or now_usec())}
    if key:
        doc["mac"] = command_mac(key, doc)
    doc["node"] = to
    return doc


def record(snapshot_id: str, node: str, archive_key: str, manifest_key: str, store: str,
           seq: int, key: bytes = b"") -> dict:
    t = now_usec()
    d = {"_id": snapshot_id, "node": node, "error": None, "created": Int64(t - 10**6),
         "started": Int64(t - 10**6), "finished": Int64(t), "items_done": Int64(3000),
         "items_total": Int64(3000), "progress": 100.0, "bytes": Int64(4096), "policy": "nightly",
         "archive_key": archive_key, "manifest_key": manifest_key, "store": store,
         "state": "completed", "expire": Int64(0), "point_in_time": False, "verify_state": "",
         "verify_finished": Int64(0), "verify_error": None, "seq": Int64(seq),
         "origin": "manual", "detached": Int64(0), "parts": None, "updated": Int64(t)}
    d["mac"] = snapshot_mac(key, d) if key else None
    return d


NEW_KEY = b"the-new-cluster-key-of-32-bytes-or-more"


def configure(cluster, node: str, keys: str = "") -> None:
    """node's agent with SigningKeyCredential=keys ("" for none); credential old-key holds KEY
    and new-key NEW_KEY."""
    ag = cluster[node]
    agent_config(ag, node, cluster.store, cluster.coord.uri, cluster.database,
                 extra=f"SigningKeyCredential={keys}\n" if keys else "")
    (ag.credentials / "old-key").write_bytes(KEY + b"\n")
    (ag.credentials / "new-key").write_bytes(NEW_KEY)


def restart(cluster, node: str, keys: str = "") -> None:
    cluster[node].stop()
    configure(cluster, node, keys)
    cluster.start(node)


def two_nodes_and_a_snapshot(cluster, keys: str = ""):
    """node-a and node-b started with keys; a snapshot node-a took, listed by node-b."""
    for n in ("node-a", "node-b"):
        configure(cluster, n, keys)
    cluster.write_policy()
    cluster.start("node-a", "node-b")
    a, b = cluster["node-a"], cluster["node-b"]
    snap = decode(a.take_snapshot("nightly"))
    completed(a, snap, "snapshot completed")
    b.wait_for(lambda: state_on(b, snap) == "completed", "node-b lists it", timeout=15)
    return a, b, snap


def completed(agent, snapshot_id: str, what: str) -> None:
    agent.wait_for(lambda: state_on(agent, snapshot_id) == "completed", what, timeout=90)


def files_of(cluster, snapshot_id: str):
    doc = cluster.db.snapshots.find_one({"_id": snapshot_id})
    return [Path(cluster.store) / doc["archive_key"], Path(cluster.store) / doc["manifest_key"]]


def test_a_signed_cluster_takes_only_what_its_key_signed(cluster):
    for n in ("node-a", "node-b", "node-c"):
        configure(cluster, n, "old-key" if n != "node-c" else "")
    cluster.write_policy()
    cluster.start("node-a", "node-b")
    a, b = cluster["node-a"], cluster["node-b"]
    assert "records and commands signed with the cluster key" in a.log_text()
    paths = []
    for i in range(3):
        paths.append(a.take_snapshot("nightly"))
        completed(a, decode(paths[-1]), f"snapshot {i} completed")
    first, second, keep = (decode(p) for p in paths)
    b.wait_for(lambda: state_on(b, keep) == "completed", "node-b lists node-a's snapshot", 20)
    doc = cluster.db.snapshots.find_one({"_id": keep})
    assert doc["mac"] == snapshot_mac(KEY, doc), "the agent's signature is not the documented one"

    # Orders to delete `first` that the key did not sign: none is carried out, all are removed.
    forged = [
        command(first),                                           # unsigned
        dict(command(first), mac="0" * 64),                       # a made-up signature
        command(first, key=b"another key of the right size........"),
        command(first, key=KEY, created=now_usec() - DAY_USEC - 60 * 10**6),  # a day old
        command(first, key=KEY, created=now_usec() + 3600 * 10**6),          # from the future
        command(first, key=KEY, signed_for="node-b"),             # signed for another node
    ]
    cluster.db.commands.insert_many(forged)
    a.wait_for(lambda: cluster.db.commands.count_documents({"node": "node-a"}) == 0,
               "node-a takes the commands off the database", timeout=15)
    time.sleep(2 * HEARTBEAT)
    assert state_on(a, first) == "completed"
    assert all(f.exists() for f in files_of(cluster, first))

    # One signed with the key is carried out: the refusals above were the key's doing.
    files = files_of(cluster, first)
    cluster.db.commands.insert_one(command(first, key=KEY))
    a.wait_for(lambda: state_on(a, first) in ("deleted", ""), "the signed delete done", 30)
    a.wait_for(lambda: not any(f.exists() for f in files), "its files removed", 30)
    # And so is the agents' own: Delete given on node-b reaches node-a.
    b.call(paths[1], SNAPSHOT_IFACE, "Delete")
    a.wait_for(lambda: state_on(a, second) in ("deleted", ""), "node-b's delete done", 30)

    # Records nobody with the key wrote: one naming `keep`'s files under another name (signed
    # or not), one of node-a's with the highest seq (it would count first for KeepLast=).
    kd = cluster.db.snapshots.find_one({"_id": keep})
    alias = "nightly-20000101T000000Z"
    bad = [
        record(alias, "node-a", kd["archive_key"], kd["manifest_key"], kd["store"], 1),
        record("nightly-20000101T000001Z", "node-a", kd["archive_key"], kd["manifest_key"],
               kd["store"], 1, key=KEY),
        record("nightly-29990101T000000Z", "node-a", "nightly/nightly-29990101T000000Z.archive.zst",
               "nightly/nightly-29990101T000000Z.manifest.json", kd["store"], 10**9),
    ]
    # One signed with the key for node-b: listed, so both sides agree on the encoding.
    good = record("nightly-20010101T000000Z", "node-b",
                  "nightly/nightly-20010101T000000Z.archive.zst",
                  "nightly/nightly-20010101T000000Z.manifest.json", kd["store"], 2, key=KEY)
    cluster.db.snapshots.insert_many(bad + [good])
    a.wait_for(lambda: state_on(a, good["_id"]) == "completed", "node-a lists the signed record",
               timeout=15)
    b.wait_for(lambda: state_on(b, good["_id"]) == "completed", "node-b lists it", timeout=15)
    time.sleep(2 * HEARTBEAT)
    for ag in (a, b):
        listed = {r["id"] for r in ag.list_snapshots()}
        assert not listed & {d["_id"] for d in bad}, listed
    assert all(f.exists() for f in files_of(cluster, keep))
    assert state_on(a, keep) == "completed"

    # An agent without the key: what it writes, the others do not take (and it says nothing
    # of theirs: it checks nothing).
    c = cluster["node-c"]
    cluster.start("node-c")
    assert "records and commands not signed" in c.log_text()
    theirs = decode(c.take_snapshot("nightly"))
    completed(c, theirs, "node-c's snapshot completed")
    c.wait_for(lambda: state_on(c, keep) == "completed", "node-c lists node-a's", timeout=15)
    time.sleep(3 * HEARTBEAT)
    assert state_on(a, theirs) == "" and state_on(b, theirs) == ""


def test_without_a_key_a_record_naming_another_snapshots_files_is_refused(cluster):
    a, b, keep = two_nodes_and_a_snapshot(cluster)
    kd = cluster.db.snapshots.find_one({"_id": keep})
    assert kd["mac"] is None  # nothing is signed without a key
    alias = record("nightly-20000101T000000Z", "node-a", kd["archive_key"], kd["manifest_key"],
                   kd["store"], 1)
    # Without a key, a well-formed unsigned record is taken as before.
    plain = record("nightly-20010101T000000Z", "node-b",
                   "nightly/nightly-20010101T000000Z.archive.zst",
                   "nightly/nightly-20010101T000000Z.manifest.json", kd["store"], 2)
    cluster.db.snapshots.insert_many([alias, plain])
    for ag in (a, b):
        ag.wait_for(lambda ag=ag: state_on(ag, plain["_id"]) == "completed",
                    "the well-formed record listed", timeout=15)
    time.sleep(2 * HEARTBEAT)
    assert state_on(a, alias["_id"]) == "" and state_on(b, alias["_id"]) == ""
    assert all(f.exists() for f in files_of(cluster, keep))
    # A plain command is carried out without a key, as before.
    cluster.db.commands.insert_one(command(keep))
    a.wait_for(lambda: state_on(a, keep) in ("deleted", ""), "the unsigned delete done", 30)


def test_turning_the_key_on_and_off_rewrites_every_record(cluster):
    """Records written before the key was set are written again, signed, when the agents start
    with it (else the other nodes would stop listing them); and unsigned when it is removed."""
    nodes = ("node-a", "node-b")
    a, b, snap = two_nodes_and_a_snapshot(cluster)
    assert cluster.db.snapshots.find_one({"_id": snap})["mac"] is None
    for on in (True, False):
        for n in nodes:
            restart(cluster, n, "old-key" if on else "")
        want = (lambda d: d["mac"] == snapshot_mac(KEY, d)) if on else (lambda d: d["mac"] is None)
        a.wait_for(lambda: want(cluster.db.snapshots.find_one({"_id": snap})),
                   f"the record written again {'signed' if on else 'unsigned'}", timeout=15)
        b.wait_for(lambda: state_on(b, snap) == "completed", "node-b lists it", timeout=15)


def test_a_key_rotation_lists_every_record_throughout(cluster):
    """SigningKeyCredential=NEW OLD signs with the new key and takes what either signed; each
    node restarted so writes its records again with the new key. At the end, with the new key
    alone, everything is listed and what only the old key signed is refused."""
    nodes = ("node-a", "node-b")
    a, b, s1 = two_nodes_and_a_snapshot(cluster, "old-key")

    restart(cluster, "node-b", "new-key old-key")
    b.wait_for(lambda: state_on(b, s1) == "completed", "node-b takes the old key's s1", 15)
    s2 = decode(b.take_snapshot("nightly"))
    completed(b, s2, "s2 completed")
    assert cluster.db.snapshots.find_one({"_id": s2})["mac"] == \
        snapshot_mac(NEW_KEY, cluster.db.snapshots.find_one({"_id": s2}))
    time.sleep(2 * HEARTBEAT)
    assert state_on(a, s2) == "", "a node with the old key alone took the new key's record"

    restart(cluster, "node-a", "new-key old-key")
    a.wait_for(lambda: state_on(a, s2) == "completed", "node-a takes s2", timeout=15)

    for n in nodes:
        restart(cluster, n, "new-key")
    forged = record("nightly-20000101T000000Z", "node-b",
                    "nightly/nightly-20000101T000000Z.archive.zst",
                    "nightly/nightly-20000101T000000Z.manifest.json",
                    cluster.db.snapshots.find_one({"_id": s1})["store"], 1, key=KEY)
    cluster.db.snapshots.insert_one(forged)
    for ag in (a, b):
        ag.wait_for(lambda ag=ag: state_on(ag, s1) == state_on(ag, s2) == "completed",
                    "both snapshots listed with the new key alone", timeout=15)
    time.sleep(2 * HEARTBEAT)
    assert state_on(a, forged["_id"]) == "" and state_on(b, forged["_id"]) == ""
    doc = cluster.db.snapshots.find_one({"_id": s1})
    assert doc["mac"] == snapshot_mac(NEW_KEY, doc)
