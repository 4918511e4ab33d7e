"""A MongoDB wire-protocol listener that records what clients send it, for tests that must show
a secret never reaches a server a caller chose (test_credential_scopes.py).  It answers the
handshake (OP_QUERY and OP_MSG hello/isMaster) as a replica-set primary, refuses every other
command (authentication included) with an error, and keeps every command document received.
A mock by necessity: no real server can show what arrives at it; FerretDB serves the other
tests."""

from __future__ import annotations

import socket
import struct
import threading
from typing import List

import bson

OP_QUERY, OP_REPLY, OP_MSG = 2004, 1, 2013
HELLO = {"ismaster": True, "isWritablePrimary": True, "maxBsonObjectSize": 16 * 1024 * 1024,
         "maxMessageSizeBytes": 48000000, "maxWriteBatchSize": 100000, "minWireVersion": 0,
         "maxWireVersion": 17, "ok": 1.0}


def recv_exactly(conn: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = conn.recv(n - len(out))
        if not chunk:
            raise ConnectionError(f"closed by {conn.getpeername()} after {len(out)} of {n} bytes")
        out += chunk
    return out


def close_listener(sock: socket.socket) -> None:
    """shutdown() wakes the accept() blocked in the listening thread: after close() alone it may
    go on accepting on the descriptor number the next socket is given (a test's stand-in then
    took the next test's connections)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class FakeMongo:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.commands: List[dict] = []
        self.raw = bytearray()  # every byte received, to search for secrets
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command_names(self) -> List[str]:
        with self.lock:
            return [next(iter(c), "") for c in self.commands]

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            while True:
                header = recv_exactly(conn, 16)
                length, request_id, _, opcode = struct.unpack("<iiii", header)
                body = recv_exactly(conn, length - 16)
                with self.lock:
                    self.raw += header + body
                if opcode == OP_QUERY:
                    # flags, cstring collection, skip, return, query document
                    name_end = body.index(b"\0", 4)
                    doc = bson.decode(body[name_end + 9:name_end + 9 + struct.unpack(
                        "<i", body[name_end + 9:name_end + 13])[0]])
                    self._record(doc)
                    reply = bson.encode(HELLO)
                    payload = struct.pack("<iqii", 0, 0, 0, 1) + reply
                    conn.sendall(struct.pack("<iiii", 16 + len(payload), 0, request_id, OP_REPLY)
                                 + payload)
                elif opcode == OP_MSG:
                    doc = bson.decode(body[5:5 + struct.unpack("<i", body[5:9])[0]])
                    self._record(doc)
                    name = next(iter(doc), "").lower()
                    answer = HELLO if name in ("hello", "ismaster") else \
                        {"ok": 0.0, "errmsg": "refused by the recording test server", "code": 18}
                    payload = struct.pack("<I", 0) + b"\0" + bson.encode(answer)
                    conn.sendall(struct.pack("<iiii", 16 + len(payload), 0, request_id, OP_MSG)
                                 + payload)
                else:
                    return
        except (ConnectionError, OSError, ValueError, struct.error):
            pass
        finally:
            conn.close()

    def _record(self, doc: dict) -> None:
        with self.lock:
            self.commands.append(doc)

    def close(self) -> None:
        close_listener(self.sock)
