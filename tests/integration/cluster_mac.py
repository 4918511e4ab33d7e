"""The signatures of cluster records and commands, computed from the encoding
src/cluster/record-mac.c documents, independently of it: a record signed here that an agent
accepts, or an agent's record that checks out here, shows both sides agree."""

from __future__ import annotations

import hashlib
import hmac
import struct

KEY = b"0123456789abcdef0123456789abcdef-cluster"
DOMAIN = "mongosnap cluster record v1"
DAY_USEC = 24 * 3600 * 10**6


def _str(s):
    if s is None:
        return b"n"
    b = s.encode()
    return b"s" + struct.pack(">Q", len(b)) + b


def _u64(v: int) -> bytes:
    return b"u" + struct.pack(">Q", min(v, 2**63 - 1))


def _double(v: float) -> bytes:
    return b"d" + struct.pack(">d", 0.0 if v == 0 else v)


def _mac(key: bytes, kind: str, fields: bytes) -> str:
    return hmac.new(key, _str(DOMAIN) + _str(kind) + fields, hashlib.sha256).hexdigest()


def command_mac(key: bytes, doc: dict) -> str:
    return _mac(key, "command",
                _str(str(doc["_id"])) + _str(doc["node"]) + _str(doc["op"]) +
                _str(doc["policy"]) + _str(doc["task"]) + _str(doc["from"]) +
                _u64(int(doc["created"])))


def snapshot_mac(key: bytes, d: dict) -> str:
    return _mac(key, "snapshot",
                _str(d["_id"]) + _str(d["node"]) + _str(d["error"]) + _u64(d["created"]) +
                _u64(d["started"]) + _u64(d["finished"]) + _u64(d["items_done"]) +
                _u64(d["items_total"]) + _double(d["progress"]) + _u64(d["bytes"]) +
                _str(d["policy"]) + _str(d["archive_key"]) + _str(d["manifest_key"]) +
                _str(d["store"]) + _str(d["state"]) + _u64(d["expire"]) +
                (b"T" if d["point_in_time"] else b"F") + _str(d["verify_state"]) +
                _u64(d["verify_finished"]) + _str(d["verify_error"]) + _u64(d["seq"]) +
                _str(d["origin"]) + _u64(d["detached"]) + _str(d["parts"]))
