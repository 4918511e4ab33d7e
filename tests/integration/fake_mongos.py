"""A stand-in mongos for the sharded-cluster tests: a wire-protocol proxy in front of the config
server's FerretDB that answers as a mongos does for what mongosnap asks of one.

No mongos can be had here (see test_sharded.py), and what only a mongos shows (the balancer,
getShardMap, hello's "isdbgrid") would otherwise be covered by unit tests on recorded replies
alone. This proxy lets the worker and the agent drive those paths over the wire, end to end:
- hello/isMaster (OP_QUERY and OP_MSG) are the config server's, made a mongos's: msg
  "isdbgrid", no replica set fields;
- balancerStatus, balancerStop and balancerStart keep a balancer state here (mode "full" or
  "off"), every call recorded in order; a test can make balancerStop fail;
- getShardMap names the config server and every shard of config.shards;
- every other command goes to the config server as it is (so config.shards, config.chunks and
  the rest are read through it, as through a mongos).
A mock by necessity, and only of the mongos itself: the shards and the config server are real
FerretDB servers."""

from __future__ import annotations

import socket
import struct
import threading
from typing import Callable, List, Optional

import bson

from fake_mongo import close_listener, recv_exactly

OP_REPLY, OP_QUERY, OP_MSG = 1, 2004, 2013
MONGOS_DROPS = ("setName", "hosts", "primary", "secondary", "me", "setVersion", "electionId",
                "arbiterOnly", "passives", "arbiters", "tags", "lastWrite")


def _read_message(conn: socket.socket):
    header = recv_exactly(conn, 16)
    length, request_id, response_to, opcode = struct.unpack("<iiii", header)
    return request_id, response_to, opcode, header + recv_exactly(conn, length - 16)


def _as_mongos(hello: dict) -> dict:
    out = {k: v for k, v in hello.items() if k not in MONGOS_DROPS}
    out["msg"] = "isdbgrid"
    return out


def _msg_reply(request_id: int, doc: dict) -> bytes:
    payload = struct.pack("<I", 0) + b"\0" + bson.encode(doc)
    return struct.pack("<iiii", 16 + len(payload), 0, request_id, OP_MSG) + payload


class FakeMongos:
    """Listens on 127.0.0.1; `uri` reaches it. `balancer` is "full" or "off"; `calls` lists the
    balancer commands received; `fail_stop` makes balancerStop answer an error (after which the
    balancer may be off all the same, as on a mongos whose stop timed out: `stop_anyway`)."""

    def __init__(self, config_address: str, shard_map: Callable[[], dict]) -> None:
        self.backend = config_address
        self.shard_map = shard_map
        self.balancer = "full"
        self.calls: List[str] = []
        self.errors: List[str] = []  # why connections ended, for a failing test's message
        self.fail_stop = False
        self.stop_anyway = False
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(32)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _balancer(self, name: str) -> Optional[dict]:
        if name not in ("balancerstatus", "balancerstop", "balancerstart"):
            return None
        with self.lock:
            self.calls.append(name)
            if name == "balancerstatus":
                return {"mode": self.balancer, "inBalancerRound": False, "numBalancerRounds": 1,
                        "ok": 1.0}
            if name == "balancerstop":
                if self.fail_stop:
                    if self.stop_anyway:
                        self.balancer = "off"
                    return {"ok": 0.0, "errmsg": "operation exceeded time limit", "code": 50,
                            "codeName": "MaxTimeMSExpired"}
                self.balancer = "off"
                return {"ok": 1.0}
            if name == "balancerstart":
                self.balancer = "full"
                return {"ok": 1.0}

    def _serve(self, conn: socket.socket) -> None:
        host, port = self.backend.rsplit(":", 1)
        try:
            backend = socket.create_connection((host, int(port)))
        except OSError as e:
            self.errors.append(f"backend: {e!r}")
            conn.close()
            return
        try:
            while True:
                request_id, _, opcode, message = _read_message(conn)
                if opcode == OP_MSG:
                    flags = struct.unpack("<I", message[16:20])[0]
                    if message[20] == 0 and not flags & 1:
                        doc = bson.decode(message[21:21 + struct.unpack("<i", message[21:25])[0]])
                        name = next(iter(doc), "").lower()
                        answer = self._balancer(name)
                        if answer is None and name == "getshardmap":
                            answer = {"map": self.shard_map(), "ok": 1.0}
                        if answer is not None:
                            conn.sendall(_msg_reply(request_id, answer))
                            continue
                        if name in ("hello", "ismaster"):
                            backend.sendall(message)
                            _, _, _, reply = _read_message(backend)
                            body = bson.decode(reply[21:21 + struct.unpack("<i", reply[21:25])[0]])
                            conn.sendall(_msg_reply(request_id, _as_mongos(body)))
                            continue
                    backend.sendall(message)
                    if flags & 2:  # moreToCome: no reply
                        continue
                    _, _, _, reply = _read_message(backend)
                    conn.sendall(reply)
                elif opcode == OP_QUERY:  # the legacy handshake
                    backend.sendall(message)
                    _, _, _, reply = _read_message(backend)
                    n_docs = struct.unpack("<i", reply[32:36])[0]
                    if n_docs == 1:
                        body = bson.decode(reply[36:36 + struct.unpack("<i", reply[36:40])[0]])
                        payload = reply[16:36] + bson.encode(_as_mongos(body))
                        reply = struct.pack("<iiii", 16 + len(payload), 0, request_id, OP_REPLY) \
                            + payload
                    conn.sendall(reply)
                else:
                    return
        except (ConnectionError, OSError, ValueError, struct.error) as e:
            self.errors.append(repr(e))
        finally:
            conn.close()
            backend.close()

    def close(self) -> None:
        close_listener(self.sock)
