"""Writes mongodump archives from Python, for tests that need an archive whose content no server
here can produce (an oplog holding dropDatabase, renameCollection, applyOps, transactions, index
builds...).  The layout is mongodump's (magic, header, prelude of collection metadata, segments
of documents per namespace, EOF blocks with each namespace's CRC-64/ECMA), the same one
tests/fuzz/make-corpus.py writes for the fuzz corpus; the oplog goes under the namespace
"".oplog as mongodump --oplog writes it, and mongosnap-worker restore --archive replays it.
"""

from __future__ import annotations

import json
import struct
from typing import Dict, Iterable, List, Sequence, Tuple

import bson
from bson import Int64

MAGIC = struct.pack("<I", 0x8199E26D)
TERMINATOR = b"\xff\xff\xff\xff"
_POLY = 0xC96C5795D7870F42
_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ (_POLY if _c & 1 else 0)
    _TABLE.append(_c)


def crc64(data: bytes, crc: int = 0) -> int:
    crc ^= 0xFFFFFFFFFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFFFFFFFFFF


def _signed(crc: int) -> Int64:
    return Int64(struct.unpack("<q", struct.pack("<Q", crc))[0])


def build(collections: Dict[Tuple[str, str], Sequence[dict]], oplog: Sequence[dict] = (),
          views: Iterable[Tuple[str, str, str]] = ()) -> bytes:
    """collections: {(db, coll): [docs]}; oplog: entries (captured as "".oplog); views:
    (db, name, viewOn).  Returns the archive's bytes (uncompressed)."""
    out = bytearray(MAGIC)
    out += bson.encode({"concurrent_collections": 1, "version": "0.1",
                        "server_version": "7.0.14", "tool_version": "archive_builder"})
    prelude: List[Tuple[str, str]] = []
    for (db, coll) in collections:
        meta = json.dumps({"options": {}, "indexes": [{"v": 2, "key": {"_id": 1}, "name": "_id_"}],
                           "collectionName": coll, "type": "collection"})
        out += bson.encode({"db": db, "collection": coll, "metadata": meta, "size": 0, "type": ""})
        prelude.append((db, coll))
    for db, name, view_on in views:
        meta = json.dumps({"options": {"viewOn": view_on, "pipeline": []}, "indexes": [],
                           "collectionName": name, "type": "view"})
        out += bson.encode({"db": db, "collection": name, "metadata": meta, "size": 0,
                            "type": "view"})
        prelude.append((db, name))
    if oplog:
        out += bson.encode({"db": "", "collection": "oplog", "metadata": "", "size": 0, "type": ""})
        prelude.append(("", "oplog"))
    out += TERMINATOR
    crcs: Dict[Tuple[str, str], int] = {}
    segments = list(collections.items())
    if oplog:
        segments.append((("", "oplog"), oplog))
    for (db, coll), docs in segments:
        out += bson.encode({"db": db, "collection": coll, "EOF": False, "CRC": Int64(0)})
        crc = 0
        for d in docs:
            raw = d if isinstance(d, (bytes, bytearray)) else bson.encode(d)
            out += raw
            crc = crc64(raw, crc)
        crcs[(db, coll)] = crc
        out += TERMINATOR
    for db, coll in prelude:
        out += bson.encode({"db": db, "collection": coll, "EOF": True,
                            "CRC": _signed(crcs.get((db, coll), 0))})
        out += TERMINATOR
    return bytes(out)
