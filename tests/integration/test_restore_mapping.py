"""A restore writes only into the namespaces its filters and renames map to, whatever its
snapshot's oplog holds (the safety contract in PRODUCT.md, and the first finding of the
adversarial hour: a dropDatabase in the oplog dropped the live source database under a rename).

Every case restores a hand-built archive (archive_builder.py: no server here writes commands,
applyOps or transactions to its oplog) into the session FerretDB, prepared so that the restore's
documents are all already there (duplicates change nothing), and then compares every namespace
of the target before and after: the set of namespaces that changed is exactly what the oplog's
mapped form may touch, per op kind and per filter shape (the same table as
tests/unit/test-oplog-plan.c).  Commands FerretDB lacks (convertToCapped, emptycapped) must be
refused before any oplog entry is sent (listCommands preflight); those it lists but does not
implement (collMod, views, renameCollection with dropTarget or across databases) are sent in
their mapped form and refused by the server: either way nothing outside the mapping changes.

The property test then runs random oplogs under random filters and renames and checks that every
namespace that changed is the image of a selected source namespace (a model of the mapping
written here, independently of the C code).
"""

from __future__ import annotations

import hashlib
import random
import re

import bson
import pytest
from bson import Timestamp

import archive_builder
import helpers as h

SOURCE = {("shop", "c1"), ("shop", "c2"), ("other", "o1")}
# What the target holds before each case: the archive's namespaces under every filter's image,
# plus namespaces no snapshot has (they must never change), plus one in admin.
TARGET_NAMESPACES = ["shop.c1", "shop.c2", "shop.zzz", "other.o1", "other.keep", "copy.c1",
                     "copy.c2", "copy.zzz", "admin.foo"]
SENTINELS = [{"_id": 1, "v": "orig"}, {"_id": 2, "v": "orig"}]

FILTERS = {
    "none": [],
    "include": ["--ns-include", "shop.c1"],
    "exclude": ["--ns-exclude", "shop.c2"],
    "rename": ["--ns-from", "shop.*", "--ns-to", "copy.*"],
    "include+rename": ["--ns-include", "shop.*", "--ns-from", "shop.*", "--ns-to", "copy.*"],
}
FILTER_ORDER = list(FILTERS)

LSID = {"lsid": {"id": bson.Binary(b"\0" * 16, 4)}, "txnNumber": bson.Int64(7)}


def c(ns_db, o, **extra):
    return {"op": "c", "ns": f"{ns_db}.$cmd", "o": o, **extra}


def i(ns, _id=10):
    return {"op": "i", "ns": ns, "o": {"_id": _id, "v": "new"}}


# name: (entries, {filter: expected touched} or one set for all filters, how FerretDB answers)
# "ok": the restore succeeds; "refused": it fails naming the command; the touched sets hold
# in both cases (for "refused", as a ceiling: what the server refused did not happen).
OK, REFUSED = "ok", "refused"


def per_filter(none, include, exclude, rename, include_rename):
    return dict(zip(FILTER_ORDER, (none, include, exclude, rename, include_rename)))


CASES = {
    "insert": ([i("shop.c1")],
               per_filter({"shop.c1"}, {"shop.c1"}, {"shop.c1"}, {"copy.c1"}, {"copy.c1"}), OK),
    "update": ([{"op": "u", "ns": "shop.c1", "o": {"$v": 1, "$set": {"v": "upd"}}, "o2": {"_id": 1}}],
               per_filter({"shop.c1"}, {"shop.c1"}, {"shop.c1"}, {"copy.c1"}, {"copy.c1"}), OK),
    "update $v:2": ([{"op": "u", "ns": "shop.c1", "o": {"$v": 2, "diff": {"u": {"v": "d"}}},
                      "o2": {"_id": 1}}],
                    per_filter({"shop.c1"}, {"shop.c1"}, {"shop.c1"}, {"copy.c1"}, {"copy.c1"}), OK),
    "delete": ([{"op": "d", "ns": "shop.c1", "o": {"_id": 1}}],
               per_filter({"shop.c1"}, {"shop.c1"}, {"shop.c1"}, {"copy.c1"}, {"copy.c1"}), OK),
    "insert elsewhere": ([i("other.o1")],
                         per_filter({"other.o1"}, set(), {"other.o1"}, {"other.o1"}, set()), OK),
    "create": ([c("shop", {"create": "c3", "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_",
                                                        "ns": "shop.c3"}})],
               per_filter({"shop.c3"}, set(), {"shop.c3"}, {"copy.c3"}, {"copy.c3"}), OK),
    "drop": ([c("shop", {"drop": "c2"})],
             per_filter({"shop.c2"}, set(), set(), {"copy.c2"}, {"copy.c2"}), OK),
    "dropDatabase": ([c("shop", {"dropDatabase": 1})],
                     per_filter({"shop.c1", "shop.c2"}, {"shop.c1"}, {"shop.c1"},
                                {"copy.c1", "copy.c2"}, {"copy.c1", "copy.c2"}), OK),
    "dropDatabase elsewhere": ([c("other", {"dropDatabase": 1})],
                               per_filter({"other.o1"}, set(), {"other.o1"}, {"other.o1"}, set()),
                               OK),
    "dropDatabase admin": ([c("admin", {"dropDatabase": 1})], set(), OK),
    "renameCollection": ([c("shop", {"renameCollection": "shop.c1", "to": "shop.c4",
                                     "stayTemp": False})],
                         per_filter({"shop.c1", "shop.c4"}, {"shop.c1"}, {"shop.c1", "shop.c4"},
                                    {"copy.c1", "copy.c4"}, {"copy.c1", "copy.c4"}), OK),
    "renameCollection from outside": (
        [c("other", {"renameCollection": "other.o1", "to": "other.o3"}),
         c("other", {"renameCollection": "other.o3", "to": "shop.c5"})],
        # FerretDB refuses the rename across databases (none, exclude: both mapped; rename:
        # other.o3 -> copy.c5); include+rename skips it as unplaceable.
        per_filter({"other.o1", "other.o3"}, set(), {"other.o1", "other.o3"},
                   {"other.o1", "other.o3"}, set()),
        {"none": REFUSED, "include": OK, "exclude": REFUSED, "rename": REFUSED,
         "include+rename": OK}),
    "renameCollection out of": (
        [c("shop", {"renameCollection": "shop.c2", "to": "other.o2"})],
        per_filter(set(), set(), set(), set(), {"copy.c2"}),
        {"none": REFUSED, "include": OK, "exclude": OK, "rename": REFUSED,
         "include+rename": OK}),
    "renameCollection into admin": (
        [c("shop", {"renameCollection": "shop.c1", "to": "admin.c1"})],
        per_filter({"shop.c1"}, {"shop.c1"}, {"shop.c1"}, {"copy.c1"}, {"copy.c1"}), OK),
    "createIndexes": ([c("shop", {"createIndexes": "c1", "v": 2, "key": {"v": 1}, "name": "v_1"})],
                      per_filter({"shop.c1"}, {"shop.c1"}, {"shop.c1"}, {"copy.c1"}, {"copy.c1"}),
                      OK),
    "index build": (
        [c("shop", {"startIndexBuild": "c1", "indexBuildUUID": bson.Binary(b"\1" * 16, 4),
                    "indexes": [{"v": 2, "key": {"w": 1}, "name": "w_1"}]}),
         c("shop", {"commitIndexBuild": "c1", "indexBuildUUID": bson.Binary(b"\1" * 16, 4),
                    "indexes": [{"v": 2, "key": {"w": 1}, "name": "w_1"}]})],
        per_filter({"shop.c1"}, {"shop.c1"}, {"shop.c1"}, {"copy.c1"}, {"copy.c1"}), OK),
    "dropIndexes": ([c("shop", {"createIndexes": "c1", "v": 2, "key": {"x": 1}, "name": "x_1"}),
                     c("shop", {"dropIndexes": "c1", "index": "x_1"})],
                    set(), OK),
    "collMod": ([c("shop", {"collMod": "c1", "validationLevel": "off"})], set(),
                per_filter(REFUSED, REFUSED, REFUSED, REFUSED, REFUSED)),
    "convertToCapped": ([c("shop", {"convertToCapped": "c1", "size": 100000})], set(),
                        per_filter(REFUSED, REFUSED, REFUSED, REFUSED, REFUSED)),
    "emptycapped": ([c("shop", {"emptycapped": "c1"})], set(),
                    per_filter(REFUSED, REFUSED, REFUSED, REFUSED, REFUSED)),
    "create view": ([c("shop", {"create": "v1", "viewOn": "c1", "pipeline": []})], set(),
                    per_filter(REFUSED, OK, REFUSED, REFUSED, REFUSED)),
    "applyOps": ([c("admin", {"applyOps": [i("shop.c1"), i("other.o1")]})],
                 per_filter({"shop.c1", "other.o1"}, {"shop.c1"}, {"shop.c1", "other.o1"},
                            {"copy.c1", "other.o1"}, {"copy.c1"}), OK),
    "applyOps holding dropDatabase": (
        [c("admin", {"applyOps": [c("other", {"dropDatabase": 1})]})],
        per_filter({"other.o1"}, set(), {"other.o1"}, {"other.o1"}, set()), OK),
    "transaction in two parts": (
        [c("admin", {"applyOps": [i("shop.c1", 11)], "partialTxn": True}, **LSID),
         c("admin", {"applyOps": [i("other.o1", 11)]}, **LSID)],
        per_filter({"shop.c1", "other.o1"}, {"shop.c1"}, {"shop.c1", "other.o1"},
                   {"copy.c1", "other.o1"}, {"copy.c1"}), OK),
    "prepared transaction committed": (
        [c("admin", {"applyOps": [{"op": "d", "ns": "shop.c1", "o": {"_id": 2}}], "prepare": True},
           **LSID),
         c("admin", {"commitTransaction": 1, "commitTimestamp": Timestamp(5, 1)}, **LSID)],
        per_filter({"shop.c1"}, {"shop.c1"}, {"shop.c1"}, {"copy.c1"}, {"copy.c1"}), OK),
    "prepared transaction aborted": (
        [c("admin", {"applyOps": [{"op": "d", "ns": "shop.c1", "o": {"_id": 2}}], "prepare": True},
           **LSID),
         c("admin", {"abortTransaction": 1}, **LSID)], set(), OK),
    "transaction never committed": (
        [c("admin", {"applyOps": [i("shop.c1", 12)], "partialTxn": True}, **LSID)], set(), OK),
    "insert into admin": ([i("admin.foo")], set(), OK),
    "drop in admin": ([c("admin", {"drop": "foo"})], set(), OK),
    "create in config": ([c("config", {"create": "x"})], set(), OK),
    "insert into local": ([i("local.foo")], set(), OK),
    "insert into a system collection": ([i("shop.system.profile")], set(), OK),
}


def with_ts(entries):
    """The entries with increasing timestamps, as an oplog has them."""
    out = []
    for n, e in enumerate(entries):
        e = dict(e)
        e.setdefault("ts", Timestamp(1_700_000_000 + n, 1))
        out.append(e)
    return out


def prepare_target(client):
    """Every TARGET_NAMESPACES collection holding the sentinels, and nothing else."""
    for db in client.list_database_names():
        if db not in h.SYSTEM_DBS:
            client.drop_database(db)
    client.admin.drop_collection("foo")
    for ns in TARGET_NAMESPACES:
        db, coll = ns.split(".", 1)
        client[db][coll].insert_many([dict(d) for d in SENTINELS])


def target_state(client) -> dict:
    """namespace -> digest of its documents and indexes, for every namespace but the system
    databases' own (admin.foo is watched)."""
    state = {}
    for db in client.list_database_names():
        if db in ("local", "config"):
            continue
        for coll in client[db].list_collection_names():
            if db == "admin" and coll.startswith("system."):
                continue
            docs = sorted(bson.encode(d) for d in client[db][coll].find({}))
            idx = sorted(ix["name"] for ix in client[db][coll].list_indexes())
            state[f"{db}.{coll}"] = hashlib.sha256(b"".join(docs) + repr(idx).encode()).hexdigest()
    return state


def touched(before: dict, after: dict) -> set:
    return {ns for ns in set(before) | set(after) if before.get(ns) != after.get(ns)}


def source_archive(tmp_path, entries):
    data = archive_builder.build({key: SENTINELS for key in sorted(SOURCE)}, with_ts(entries))
    path = tmp_path / "case.archive"
    path.write_bytes(data)
    return path


def run_case(tools, server, tmp_path, entries, filter_args):
    client = server.client
    prepare_target(client)
    archive = source_archive(tmp_path, entries)
    uri_file = h.write_uri_file(tmp_path, server.uri)
    before = target_state(client)
    run = h.run_worker(tools, "restore", "--uri-file", uri_file, "--archive", archive,
                       "--json", *filter_args)
    return run, touched(before, target_state(client))


@pytest.mark.parametrize("case", list(CASES))
def test_every_op_kind_under_every_filter(tools, fresh_db, tmp_path, case):
    entries, expected, outcome = CASES[case]
    failures = []
    for fname, fargs in FILTERS.items():
        want = expected[fname] if isinstance(expected, dict) else expected
        how = outcome[fname] if isinstance(outcome, dict) else outcome
        run, got = run_case(tools, fresh_db, tmp_path, entries, fargs)
        if how == OK:
            if run.returncode != h.EXIT_OK:
                failures.append(f"{fname}: failed: {run.describe()}")
            elif got != want:
                failures.append(f"{fname}: touched {sorted(got)}, expected {sorted(want)}")
        else:
            if run.returncode == h.EXIT_OK:
                failures.append(f"{fname}: FerretDB was expected to refuse, but it succeeded "
                                f"(touched {sorted(got)})")
            elif not got <= want:
                failures.append(f"{fname}: refused, but touched {sorted(got - want)} anyway")
    assert not failures, f"{case}:\n" + "\n".join(failures)


def test_commands_the_target_lacks_are_refused_before_any_entry(tools, fresh_db, tmp_path):
    """The preflight: an insert before convertToCapped is not replayed either."""
    entries = [i("shop.c1", 50), c("shop", {"convertToCapped": "c1", "size": 100000})]
    run, got = run_case(tools, fresh_db, tmp_path, entries, [])
    assert run.returncode != h.EXIT_OK
    assert "convertToCapped" in run.stderr and "no oplog entry was replayed" in run.stderr, run.stderr
    assert got == set(), got


def test_unplaceable_entries_are_reported(tools, fresh_db, tmp_path):
    entries = [i("admin.foo"), i("shop.c1", 60)]
    run, got = run_case(tools, fresh_db, tmp_path, entries, [])
    assert run.returncode == h.EXIT_OK, run.describe()
    assert got == {"shop.c1"}
    result = run.json()
    assert result["oplog_unplaceable"] == 1 and result["oplog_applied"] == 1, result
    assert "admin.foo" in run.stderr and "outside the restore's namespace mapping" in run.stderr


def test_admin_is_restored_only_when_named(tools, fresh_db, tmp_path):
    entries = [i("admin.foo", 70)]
    run, got = run_case(tools, fresh_db, tmp_path, entries, ["--ns-include", "admin.*"])
    assert run.returncode == h.EXIT_OK, run.describe()
    assert got == {"admin.foo"}
    run, got = run_case(tools, fresh_db, tmp_path, entries, ["--ns-include", "*.*"])
    assert run.returncode == h.EXIT_OK, run.describe()
    assert got == set()


# ---- the property: random oplogs, random filters ---------------------------------------------

DBS = ["shop", "other", "copy", "admin", "x"]
COLLS = ["c1", "c2", "o1", "zzz"]
INCLUDES = ["shop.*", "*.c1", "other.o1", "*.*", "admin.*", "s*.*", "x.c2"]
RENAMES = [("shop.*", "copy.*"), ("*.c1", "*.r1"), ("other.*", "x.*"), ("x.c2", "shop.c9")]
PROPERTY_RUNS = 12
PROPERTY_ENTRIES = 12


def glob_re(pattern: str):
    return re.compile("^" + "(.*)".join(re.escape(p) for p in pattern.split("*")) + "$", re.S)


def model_map(ns: str, includes, excludes, renames):
    """The mapping of nsmap.h, rewritten from its documented rules; None when not mapped."""
    db, coll = ns.split(".", 1)
    if includes and not any(glob_re(p).match(ns) for p in includes):
        return None
    if any(glob_re(p).match(ns) for p in excludes):
        return None
    target, which = ns, None
    for frm, to in renames:
        m = glob_re(frm).match(ns)
        if m:
            parts = to.split("*")
            target = parts[0] + "".join(g + p for g, p in zip(m.groups(), parts[1:]))
            which = (frm, to)
            break
    tdb = target.split(".", 1)[0]
    literal = lambda p, d: "." in p and "*" not in p.split(".", 1)[0] and p.split(".", 1)[0] == d
    explicit = any(literal(p, db) and glob_re(p).match(ns) for p in includes) or \
        (which is not None and literal(which[0], db))
    sysdbs = ("admin", "local", "config")
    if db in sysdbs and not explicit:
        return None
    if tdb in sysdbs and not (literal(which[1], tdb) if which else explicit):
        return None
    return target


def random_entry(rnd):
    ns = f"{rnd.choice(DBS)}.{rnd.choice(COLLS)}"
    kind = rnd.randrange(6)
    if kind <= 1:
        return i(ns, rnd.randrange(100, 200))
    if kind == 2:
        return {"op": "d", "ns": ns, "o": {"_id": 1}}
    if kind == 3:
        db, coll = ns.split(".", 1)
        return c(db, {rnd.choice(["drop", "create"]): coll})
    if kind == 4:
        return c(rnd.choice(DBS), {"dropDatabase": 1})
    return c("admin", {"applyOps": [i(f"{rnd.choice(DBS)}.{rnd.choice(COLLS)}", 300 + k)
                                    for k in range(rnd.randrange(1, 3))]})


def test_random_oplogs_stay_inside_the_mapping(tools, fresh_db, tmp_path):
    rnd = random.Random(20261206)
    checked = 0
    for run_no in range(PROPERTY_RUNS):
        includes = rnd.sample(INCLUDES, rnd.randrange(0, 3))
        excludes = rnd.sample(INCLUDES, rnd.randrange(0, 2))
        renames = rnd.sample(RENAMES, rnd.randrange(0, 3))
        args = []
        for p in includes:
            args += ["--ns-include", p]
        for p in excludes:
            args += ["--ns-exclude", p]
        for frm, to in renames:
            args += ["--ns-from", frm, "--ns-to", to]
        entries = [random_entry(rnd) for _ in range(PROPERTY_ENTRIES)]
        run, got = run_case(tools, fresh_db, tmp_path, entries, args)
        images = {model_map(f"{d}.{cl}", includes, excludes, renames)
                  for d in DBS for cl in COLLS} - {None}
        outside = got - images
        assert not outside, (f"run {run_no} ({args}) touched {sorted(outside)} outside the "
                             f"mapping; exit {run.returncode}\n{entries}")
        checked += len(got)
    print(f"{PROPERTY_RUNS} random restores, {checked} touched namespaces, all inside the mapping")
