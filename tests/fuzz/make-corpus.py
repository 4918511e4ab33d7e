#!/usr/bin/env python3
"""Write the seed corpora of the libFuzzer targets into tests/fuzz/corpus/<target>/.

Run it after changing an input format:  python3 tests/fuzz/make-corpus.py  (the standard library
only, plus the `zstd` command for compressed snapshots). The output is deterministic, so the
committed corpus only changes when this script does.

Archives are built here by hand in the stock mongodump format (mongo-tools
common/archive/spec.md, summarised at the top of src/archive/archive.h), not with our writer:
the seeds then do not inherit the writer's habits. Policy and agent files come from the shapes
tests/unit/test-config.c uses. Each seed is a few KB at most and each target has fewer than 30.

Input layouts (each target's source file says the same):
  fuzz-archive          [chunk:u8] archive
  fuzz-snapshot-source  [flags:u8] [manifest_len:u32le] manifest archive
  fuzz-manifest         [flags:u8] manifest-json
  fuzz-config           policy \\0 agent-conf \\0 assignment \\0 timespan
  fuzz-progress         [chunk:u8] [pad:u8] lines \\0 pattern \\0 namespace \\0 to-pattern
  fuzz-uri-redact       [mode:u8] [secret_len:u8] secret-bytes user \\0 host \\0 prefix \\0 suffix
"""

import gzip
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")

# ---------------------------------------------------------------- BSON (the subset we need)


def _cstring(s):
    b = s.encode()
    assert b"\0" not in b
    return b + b"\0"


class Int64(int):
    pass


class Timestamp:
    def __init__(self, t, i):
        self.t, self.i = t, i


class ObjectId:
    def __init__(self, raw):
        assert len(raw) == 12
        self.raw = raw


class Binary:
    def __init__(self, data, subtype=0):
        self.data, self.subtype = data, subtype


class DateTime:
    def __init__(self, ms):
        self.ms = ms


def _element(key, v):
    k = _cstring(key)
    if isinstance(v, bool):
        return b"\x08" + k + (b"\x01" if v else b"\x00")
    if isinstance(v, Int64):
        return b"\x12" + k + struct.pack("<q", v)
    if isinstance(v, int):
        return b"\x10" + k + struct.pack("<i", v)
    if isinstance(v, float):
        return b"\x01" + k + struct.pack("<d", v)
    if isinstance(v, str):
        b = v.encode()
        return b"\x02" + k + struct.pack("<i", len(b) + 1) + b + b"\0"
    if isinstance(v, dict):
        return b"\x03" + k + bson(v)
    if isinstance(v, list):
        return b"\x04" + k + bson({str(i): x for i, x in enumerate(v)})
    if isinstance(v, Binary):
        return b"\x05" + k + struct.pack("<iB", len(v.data), v.subtype) + v.data
    if isinstance(v, ObjectId):
        return b"\x07" + k + v.raw
    if isinstance(v, DateTime):
        return b"\x09" + k + struct.pack("<q", v.ms)
    if v is None:
        return b"\x0a" + k
    if isinstance(v, Timestamp):
        return b"\x11" + k + struct.pack("<II", v.i, v.t)
    raise TypeError(type(v))


def bson(doc):
    body = b"".join(_element(k, v) for k, v in doc.items())
    return struct.pack("<i", len(body) + 5) + body + b"\0"


# ---------------------------------------------------------------- CRC-64/ECMA as Go's hash/crc64

_POLY = 0xC96C5795D7870F42
_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ (_POLY if _c & 1 else 0)
    _TABLE.append(_c)


def crc64(data, crc=0):
    crc ^= 0xFFFFFFFFFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFFFFFFFFFF


# ---------------------------------------------------------------- mongodump archives

MAGIC = struct.pack("<I", 0x8199E26D)
TERMINATOR = b"\xff\xff\xff\xff"


def _crc_bits(crc):
    return Int64(struct.unpack("<q", struct.pack("<Q", crc))[0])


def archive(collections, segments, *, server_version="7.0.14", concurrent=1, skip_eof=()):
    """collections: [(db, coll, type)]; segments: [(db, coll, [doc, ...])] in write order (a
    namespace may appear in several segments: interleaving). Returns (bytes, stats) with
    stats[(db, coll)] = (documents, bytes, crc)."""
    out = bytearray(MAGIC)
    out += bson({"concurrent_collections": concurrent, "version": "0.1",
                 "server_version": server_version, "tool_version": "100.11.0"})
    for db, coll, typ in collections:
        meta = json.dumps({"options": {}, "indexes": [{"v": 2, "key": {"_id": 1}, "name": "_id_"}],
                           "uuid": "0123456789abcdef0123456789abcdef", "collectionName": coll,
                           "type": typ or "collection"})
        out += bson({"db": db, "collection": coll, "metadata": meta if db else "", "size": 0,
                     "type": typ})
    out += TERMINATOR
    stats = {(db, coll): [0, 0, 0] for db, coll, _ in collections}
    for db, coll, docs in segments:
        out += bson({"db": db, "collection": coll, "EOF": False, "CRC": Int64(0)})
        for d in docs:
            raw = bson(d)
            out += raw
            s = stats.setdefault((db, coll), [0, 0, 0])
            s[0] += 1
            s[1] += len(raw)
            s[2] = crc64(raw, s[2])
        out += TERMINATOR
    for db, coll, typ in collections:
        if (db, coll) in skip_eof:
            continue
        # A time-series collection's data (and so its EOF) goes by its buckets collection.
        data_coll = "system.buckets." + coll if typ == "timeseries" else coll
        out += bson({"db": db, "collection": data_coll, "EOF": True,
                     "CRC": _crc_bits(stats.get((db, data_coll), (0, 0, 0))[2])})
        out += TERMINATOR
    return bytes(out), {k: tuple(v) for k, v in stats.items()}


def oid(n):
    return ObjectId(struct.pack(">I", 0x65000000 + n) + b"\x01\x02\x03\x04\x05" + struct.pack(">I", n)[1:])


def shop_docs(n, seed=0):
    docs = []
    for i in range(n):
        docs.append({"_id": oid(seed * 100 + i), "sku": f"sku-{seed}-{i}", "qty": i * 3,
                     "price": 9.5 + i, "big": Int64(1 << 40 | i), "tags": ["a", "b"][: i % 3],
                     "when": DateTime(1700000000000 + i), "ok": bool(i % 2), "none": None,
                     "addr": {"city": "Lyon", "zip": f"6900{i % 10}"},
                     "blob": Binary(bytes(range(i % 16)), 0)})
    return docs


def oplog_docs(n):
    docs = []
    for i in range(n):
        docs.append({"ts": Timestamp(1700000000 + i, 1), "t": Int64(1), "op": "i",
                     "ns": "shop.orders", "o": {"_id": oid(900 + i), "n": i},
                     "wall": DateTime(1700000000000 + i)})
    docs.append({"ts": Timestamp(1700000100, 1), "op": "c", "ns": "admin.$cmd",
                 "o": {"applyOps": [{"op": "u", "ns": "shop.orders", "o": {"$v": 2, "diff": {"u": {"n": 1}}},
                                     "o2": {"_id": oid(900)}}]}})
    return docs


def archives():
    """(name, bytes, collections, stats) of every seed archive."""
    out = []
    colls = [("shop", "orders", ""), ("shop", "customers", "")]
    data, st = archive(colls, [("shop", "orders", shop_docs(4, 1)),
                               ("shop", "customers", shop_docs(3, 2))])
    out.append(("two-collections", data, colls, st))

    # Interleaved segments, as a parallel dump writes them.
    data, st = archive(colls, [("shop", "orders", shop_docs(2, 1)),
                               ("shop", "customers", shop_docs(2, 2)),
                               ("shop", "orders", shop_docs(2, 3)),
                               ("shop", "customers", shop_docs(1, 4))], concurrent=4)
    out.append(("interleaved", data, colls, st))

    # An empty collection and a view: announced, EOF only.
    c3 = [("shop", "orders", ""), ("shop", "empty", ""), ("shop", "big_orders", "view")]
    data, st = archive(c3, [("shop", "orders", shop_docs(2, 5))])
    out.append(("empty-and-view", data, c3, st))

    # A point-in-time snapshot: the oplog as namespace "".oplog.
    c4 = [("shop", "orders", ""), ("", "oplog", "")]
    data, st = archive(c4, [("shop", "orders", shop_docs(3, 6)), ("", "oplog", oplog_docs(3))])
    out.append(("with-oplog", data, c4, st))

    # Time series: the prelude lists the collection, the data comes from its buckets.
    c5 = [("iot", "readings", "timeseries")]
    data, st = archive(c5, [("iot", "system.buckets.readings",
                              [{"_id": oid(700), "control": {"version": 1}, "meta": "s1",
                                "data": {"v": {"0": 1.5}}}])])
    st = {("iot", "readings"): st[("iot", "system.buckets.readings")]}
    out.append(("timeseries", data, c5, st))

    # Nothing at all: a database with no collections.
    data, st = archive([], [])
    out.append(("no-collections", data, [], st))
    return out


def damaged(data):
    """A few classic kinds of damage, each one its own seed."""
    flip = bytearray(data)
    flip[len(flip) // 2] ^= 0x40
    return [("truncated", data[: len(data) * 2 // 3]), ("bitflip", bytes(flip)),
            ("no-magic", b"\0\0\0\0" + data[4:])]


# ---------------------------------------------------------------- manifests

PLACEHOLDER = "0" * 64
MARKER = '"manifest_sha256" : "'


def manifest_json(name, archive_key, compression, stored, uncompressed_len, colls, stats, *,
                  oplog_entries=None, ns_include=(), ns_exclude=()):
    ns = []
    total_docs = total_bytes = 0
    for db, coll, typ in colls:
        if db == "":
            continue
        d, b, c = stats.get((db, coll), (0, 0, 0))
        total_docs += d
        total_bytes += b
        ns.append({"db": db, "collection": coll, "type": typ or "collection", "documents": d,
                   "bytes": b, "crc64": "0x%016x" % c, "indexes": 1})
    consistency = {"point_in_time": oplog_entries is not None}
    if oplog_entries is None:
        consistency["reason"] = "the source has no oplog (standalone server)"
    else:
        consistency["oplog_start"] = {"$timestamp": {"t": 1700000000, "i": 1}}
        consistency["oplog_end"] = {"$timestamp": {"t": 1700000100, "i": 1}}
        consistency["oplog_entries"] = oplog_entries
    doc = {
        "format": "mongosnap-manifest", "format_version": 1, "snapshot": name,
        "tool_version": "0.1.0", "node": "db1", "started_at": "2026-11-22T02:00:00Z",
        "finished_at": "2026-11-22T02:00:07Z", "elapsed_usec": 7000000,
        "source": {"uri": "mongodb://backup@db1,db2/?replicaSet=rs0", "server_version": "7.0.14"},
        "archive": {"key": archive_key, "format": "mongodump-archive", "compression": compression,
                    "size": len(stored), "sha256": hashlib.sha256(stored).hexdigest(),
                    "uncompressed_size": uncompressed_len},
        "consistency": consistency,
        "ns_include": list(ns_include), "ns_exclude": list(ns_exclude),
        "total_documents": total_docs, "total_bytes": total_bytes, "namespaces": ns,
        "manifest_sha256": PLACEHOLDER,
    }
    # libbson's relaxed extended JSON spacing: { "k" : v, ... }; the parser only needs the
    # checksum marker spelled exactly so.
    text = json.dumps(doc, separators=(", ", " : "))
    assert text.count(MARKER) == 1
    digest = hashlib.sha256(text.encode()).hexdigest()
    text = text.replace(MARKER + PLACEHOLDER, MARKER + digest)
    return (text + "\n").encode()


def compress(data, how):
    if how == "none":
        return data
    if how == "gzip":
        return gzip.compress(data, mtime=0)
    if how == "zstd":
        return subprocess.run(["zstd", "-q", "-c", "--check", "-3"], input=data, check=True,
                              capture_output=True).stdout
    raise ValueError(how)


# ---------------------------------------------------------------- writing the corpora


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


SNAPSHOT_ARCHIVE_KEY = "snap.archive"  # fuzz-snapshot-source.c stores the archive under it


def main():
    if os.path.isdir(CORPUS):
        shutil.rmtree(CORPUS)
    arcs = archives()

    # fuzz-archive: [chunk] archive
    for name, data, _, _ in arcs:
        write("fuzz-archive", name, b"\0" + data)
        write("fuzz-archive", name + "-chunk7", b"\x07" + data)
    for dname, ddata in damaged(arcs[0][1]):
        write("fuzz-archive", dname, b"\0" + ddata)
    write("fuzz-archive", "missing-eof", b"\0" + archive(arcs[0][2], [("shop", "orders", shop_docs(1))],
                                                          skip_eof={("shop", "customers")})[0])
    write("fuzz-archive", "gzip-by-mistake", b"\0" + gzip.compress(arcs[0][1], mtime=0))

    # fuzz-snapshot-source and fuzz-manifest
    manifests = []
    for (name, data, colls, stats), how in zip(arcs, ["zstd", "gzip", "none", "zstd", "none", "gzip"]):
        stored = compress(data, how)
        pit = sum(s[0] for (db, _), s in stats.items() if db == "") if any(
            db == "" for db, _, _ in colls) else None
        m = manifest_json(name, SNAPSHOT_ARCHIVE_KEY, how, stored, len(data), colls, stats,
                          oplog_entries=pit,
                          ns_include=["shop.*"] if name == "interleaved" else [],
                          ns_exclude=["shop.tmp_*"] if name == "interleaved" else [])
        manifests.append((name, m))
        write("fuzz-snapshot-source", f"{name}-{how}", b"\0" + struct.pack("<I", len(m)) + m + stored)
    # A mismatch the fuzzer would take long to build: right archive, manifest counting one
    # document more; and a manifest without the archive-sha256 patching (flags bit 0).
    name, data, colls, stats = arcs[0]
    wrong = dict(stats)
    wrong[("shop", "orders")] = (stats[("shop", "orders")][0] + 1,) + stats[("shop", "orders")][1:]
    m = manifest_json(name, SNAPSHOT_ARCHIVE_KEY, "none", data, len(data), colls, wrong)
    write("fuzz-snapshot-source", "count-mismatch", b"\0" + struct.pack("<I", len(m)) + m + data)
    m = manifest_json(name, SNAPSHOT_ARCHIVE_KEY, "none", data, len(data), colls, stats)
    write("fuzz-snapshot-source", "unpatched", b"\x01" + struct.pack("<I", len(m)) + m + data)

    for name, m in manifests:
        write("fuzz-manifest", name, b"\0" + m)
    broken = bytearray(manifests[0][1])
    broken[40] ^= 1
    write("fuzz-manifest", "bad-checksum", b"\0" + bytes(broken))
    write("fuzz-manifest", "truncated", b"\0" + manifests[0][1][: len(manifests[0][1]) // 2])
    write("fuzz-manifest", "not-a-manifest", b"\0" + b'{ "format" : "x", "manifest_sha256" : "' +
          b"0" * 64 + b'" }\n')

    # fuzz-config: policy \0 agent \0 assignment \0 timespan
    minimal = "[Policy]\nSource=mongodb://backup@db1/?replicaSet=rs0\n"
    full = ("# nightly backups of rs0\n[Policy]\n"
            "Source=mongodb://backup@db1:27017,db2:27017/?replicaSet=rs0&authSource=admin\n"
            "Credential=mongosnap-rs0\nSchedule=Mon..Fri *-*-* 02:00:00\nRandomizedDelaySec=1h 30min\n"
            "Persistent=no\nStore=s3://backups-eu/rs0\nCompression=gzip\nCompressionLevel=6\n"
            "ParallelCollections=8\nIncludeNamespaces=sales.* crm.customers\nIncludeNamespaces=billing.*\n"
            "ExcludeNamespaces=sales.tmp_*\nIncludeUsers=yes\nOplog=off\nNodePriority=hidden\n\n"
            "[Retention]\nKeepLast=3\nMaxAge=30d\nKeepDaily=7\nKeepWeekly=4\nKeepMonthly=12\n\n"
            "[Encryption]\nKey=mongosnap-key\nCipher=aes-256-gcm\n")
    agent = ("[Agent]\nNode=db1.example.net\nDefaultStore=/srv/backup\nMaxConcurrentTasks=4\n"
             "WorkerPath=/opt/mongosnap/worker\nStateDirectory=/tmp/state\nPolicyDirectory=/tmp/policies\n")
    configs = [
        ("minimal", minimal, "[Agent]\n", "Schedule=daily", "90s"),
        ("full", full, agent, "Retention.KeepLast=5", "1h 30min"),
        ("crlf-comments", "[Policy]\r\nSource = mongodb://db1/   ; the whole cluster\r\nSchedule=daily\r\n",
         "; nothing\n[Agent]\nMaxConcurrentTasks=1\n", "IncludeNamespaces=a.* b.c", "1.5h"),
        ("reset-values", minimal + "Compression=\nOplog=\n", "[Agent]\nDefaultStore=\n",
         "Compression=", "0"),
        ("zstd-level", minimal + "Compression=zstd\nCompressionLevel=19\nParallelCollections=64\n",
         "[Agent]\nDefaultStore=s3://bucket/prefix?region=eu-west-1\n", "CompressionLevel=22", "30d 2h"),
        ("encryption", minimal + "[Encryption]\nKey=k\n", "[Agent]\nNode=n1\n", "Encryption.Key=other",
         "1y 2M 3w"),
        ("unknown-key", minimal + "Bogus=1\n", "[Agent]\nWorkers=3\n", "Bogus=1", "30 days ago"),
        ("bad-section", minimal + "[Retension]\nKeepLast=1\n", "[Policy]\n", "Policy.Source=http://x",
         "5 min 3 s"),
        ("secret-in-source", "[Policy]\nSource=mongodb://backup:hunter2@db1,db2/?replicaSet=rs0\n",
         "[Agent]\nStateDirectory=var/lib\n", "Source=mongodb://db1/?tls=true&password=swordfish",
         "100000000000000000000000d"),
        ("srv-and-options", "[Policy]\nSource=mongodb+srv://c0.example.net/?authMechanism=MONGODB-AWS\n"
         "NodePriority=secondary\nPersistent=yes\nRandomizedDelaySec=15min\n",
         "[Agent]\nNode=db 1\n", "NodePriority=primary", "1ms 2us"),
        ("retention-only", minimal + "[Retention]\nKeepDaily=seven\n", "", "MaxAge=30 days ago", "2w"),
        ("long-line", minimal + "IncludeNamespaces=" + " ".join(f"db{i}.c*" for i in range(300)) + "\n",
         "", "ExcludeNamespaces=x.*", "1d 2h 3min 4s 5ms 6us"),
    ]
    for name, pol, ag, assign, span in configs:
        write("fuzz-config", name, "\0".join([pol, ag, assign, span]).encode())

    # fuzz-progress: [chunk] [pad] lines \0 pattern \0 namespace \0 to-pattern
    lines = (
        '{ "event" : "progress", "phase" : "dump", "items_done" : 10, "items_total" : 20, '
        '"percent" : 50.0, "bytes_read" : 1024, "bytes_written" : 512, "namespace" : "shop.orders", '
        '"elapsed_usec" : 12345 }\n'
        '{ "event" : "namespace-finished", "namespace" : "shop.orders", "documents" : 4, "bytes" : 900 }\n'
        '{ "event" : "result", "status" : "ok", "archive" : "nightly/n1/x.archive.zst", '
        '"manifest" : "nightly/n1/x.manifest.json", "stored_bytes" : { "$numberLong" : "4096" }, '
        '"point_in_time" : true, "entries" : 3, "removed" : 0, "message" : "done" }\n')
    oplog_lines = (
        '{ "ts" : { "$timestamp" : { "t" : 1700000000, "i" : 1 } }, "op" : "i", "ns" : "shop.orders", '
        '"o" : { "_id" : 1 } }\n'
        '{ "op" : "c", "ns" : "shop.$cmd", "o" : { "renameCollection" : "shop.a", "to" : "other.b" } }\n'
        '{ "op" : "c", "ns" : "admin.$cmd", "o" : { "applyOps" : [ { "op" : "i", "ns" : "shop.orders", '
        '"o" : { "_id" : 2 } }, { "op" : "d", "ns" : "crm.x", "o" : { "_id" : 3 } } ] } }\n'
        '{ "op" : "c", "ns" : "shop.$cmd", "o" : { "drop" : "orders" } }\n'
        '{ "op" : "i", "ns" : "iot.system.buckets.readings", "o" : { "_id" : 4 } }\n')
    progress = [
        ("worker-lines", 0, 0, lines, "shop.*", "shop.orders", "copy.*"),
        ("chunked", 5, 0, lines, "*.orders", "shop.orders", "*.orders_copy"),
        ("oplog-entries", 0, 0, oplog_lines, "shop.*", "shop.orders", "backup.*"),
        ("no-final-newline", 3, 0, lines.rstrip("\n"), "s*p.o*s", "shop.orders", "x*y.z*w"),
        ("not-json", 1, 0, "hello\n{ broken\n\n\n{}\n", "db.*", "db.coll", "db2.*"),
        ("overlong", 0, 0x83, lines, "*.*", "a.b", "*.*"),
        ("run-on", 9, 0xC2, lines, "a.*", "a.b", "b.*"),
        ("at-limit", 0, 0x82, lines, "a*.*b", "aXY.Zb", "c*.*d"),
        ("stars", 0, 0, "{}\n", "*a*b*c*.*d*e*f*", "xaybzc.wdeef", "*1*2*3*.*4*5*6*"),
        ("bad-patterns", 0, 0, oplog_lines, "sh/op.*", "shop.orders", "*"),
        ("users", 0, 0, '{ "op" : "i", "ns" : "admin.system.users", "o" : { "_id" : "a.u" } }\n',
         "admin.*", "admin.system.users", "admin2.*"),
    ]
    for name, chunk, pad, ls, pat, ns, to in progress:
        write("fuzz-progress", name, bytes([chunk, pad]) + "\0".join([ls, pat, ns, to]).encode())

    # fuzz-uri-redact: [mode] [secret_len] secret user \0 host \0 prefix \0 suffix
    uris = [
        ("plain", 0, b"hunter2hunter2", "backup", "db1", "", ""),
        ("host-list", 0, b"Sw0rdfishSw0rdfish", "backup", "db1:27017,db2:27017",
         "cannot connect to ", "?replicaSet=rs0&authSource=admin"),
        ("in-message", 0, b"aB3dE5gH", "u.ser%40corp", "db1.example.net", "error: \"",
         "\" refused the login"),
        ("raw-at-in-suffix", 0, b"abcdefgh12345678", "u", "h", "x=", "a@b c"),
        ("query-password", 1, b"QwErTy123456", "backup", "db1", "uri: ", "?tls=true"),
        ("srv", 2, b"zzzzzzzzzzzzzzzz", "svc", "c0.example.net", "(", ")"),
        ("other-scheme", 3, b"s3cr3tPassw0rd", "key", "minio:9000", "proxy ", "/bucket"),
        ("two-uris", 0, b"0123456789abcdef", "a", "b", "mongodb://x:y@z/ and ", " and http://p:q@r/"),
    ]
    # The target maps bytes to characters (byte % len(set), see fuzz-uri-redact.c); write bytes
    # that give back these very strings (never 0: that separates the parts).
    alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    user_chars = alnum + "-._~%"
    host_chars = "abcdefghijklmnopqrstuvwxyz0123456789.-:,[]"
    for name, mode, secret, user, host, prefix, suffix in uris:
        assert 8 <= len(secret) <= 64
        write("fuzz-uri-redact", name, bytes([mode, len(secret) - 8]) +
              bytes(alnum.index(c) for c in secret.decode()) +
              bytes(user_chars.index(c) or len(user_chars) for c in user) + b"\0" +
              bytes(host_chars.index(c) or len(host_chars) for c in host) + b"\0" +
              "\0".join([prefix, suffix]).encode())

    for target in sorted(os.listdir(CORPUS)):
        files = os.listdir(os.path.join(CORPUS, target))
        size = sum(os.path.getsize(os.path.join(CORPUS, target, f)) for f in files)
        assert len(files) < 30, target
        print(f"{target}: {len(files)} seeds, {size} bytes")


if __name__ == "__main__":
    sys.exit(main())
