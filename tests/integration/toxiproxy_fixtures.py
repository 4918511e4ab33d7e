"""toxiproxy (Shopify's TCP fault injector) in front of the session MinIO, for the S3 fault
tests (test_s3_faults.py). The server is $MONGOSNAP_TOOLS_BIN/toxiproxy-server
(scripts/lib/testbed.sh: ms_build_toxiproxy); everything listens on 127.0.0.1 only.

  toxiproxy      (session) the server: .api ("http://127.0.0.1:PORT"), .request(method, path,
                 body) -> parsed JSON; stopped at the end of the session
  minio_proxy    (function) a proxy to the session `minio` on a free port: .endpoint
                 ("http://127.0.0.1:PORT"), .location(bucket, prefix, **options) like
                 MinIO.location but through the proxy, and toxics:
                   .reset_peer(timeout_ms, stream="upstream")   RST after timeout_ms
                   .latency(ms, jitter_ms=0, stream="downstream")
                   .bandwidth(kb_per_s, stream="downstream")
                   .timeout(ms, stream="upstream")   data dropped; closed after ms (0: never)
                   .limit_data(n_bytes, stream="upstream")   closed after n_bytes per connection
                   .slicer(average_size, size_variation=0, delay_us=0, stream="downstream")
                 each returns the toxic's name; .remove(name), .clear(), .remove_after(name,
                 seconds) (a timer thread), .toxics(); removed after the test.

Import them with `from toxiproxy_fixtures import *  # noqa: F401,F403` (after minio_fixtures).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

from conftest import TOOLS_BIN, _die_with_parent, free_port

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
POLL_INTERVAL = 0.05
START_ATTEMPTS = 3  # free_port() is racy
API_TIMEOUT = 10.0
STREAMS = ("upstream", "downstream")


class ToxiproxyError(RuntimeError):
    pass


class Toxiproxy:
    """One toxiproxy-server; its REST API on 127.0.0.1:port."""

    def __init__(self, binary: Path, workdir: Path):
        self.binary = Path(binary)
        self.workdir = Path(workdir)
        self.logfile = self.workdir / "toxiproxy.log"
        self.port: Optional[int] = None
        self.proc: Optional[subprocess.Popen] = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, body: Optional[dict] = None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.api + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=API_TIMEOUT) as r:
                text = r.read().decode()
        except urllib.error.HTTPError as e:
            raise ToxiproxyError(f"toxiproxy {method} {path}: HTTP {e.code}: "
                                 f"{e.read().decode(errors='replace')}") from None
        return json.loads(text) if text.strip() else None

    def start(self) -> "Toxiproxy":
        self.workdir.mkdir(parents=True, exist_ok=True)
        for _ in range(START_ATTEMPTS):
            self.port = free_port()
            cmd = [str(self.binary), "-host", "127.0.0.1", "-port", str(self.port)]
            with open(self.logfile, "ab") as log:
                self.proc = subprocess.Popen(_die_with_parent(cmd), stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=subprocess.STDOUT)
            if self._wait_ready():
                return self
            self._kill()
        pytest.fail(f"toxiproxy did not start on 127.0.0.1 (see {self.logfile}):\n"
                    f"{self.log_text()[-4000:]}", pytrace=False)

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.api + "/version", timeout=2) as r:
                    if r.status == 200:
                        return True
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(POLL_INTERVAL)
        return False

    def _kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._kill()
        self.proc = None

    def log_text(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class Proxy:
    """One proxy of a Toxiproxy server: listen on 127.0.0.1:port, forward to upstream."""

    def __init__(self, server: Toxiproxy, name: str, upstream: str):
        self.server = server
        self.name = name
        self.upstream = upstream
        self.port: Optional[int] = None
        self._timers: List[threading.Timer] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def location(self, bucket: str, prefix: str = "", **options: str) -> str:
        query = "&".join([f"endpoint={self.endpoint}"] + [f"{k}={v}" for k, v in options.items()])
        return f"s3://{bucket}{'/' + prefix if prefix else ''}?{query}"

    def create(self) -> "Proxy":
        last = None
        for _ in range(START_ATTEMPTS):
            port = free_port()
            try:
                self.server.request("POST", "/proxies", {
                    "name": self.name, "listen": f"127.0.0.1:{port}",
                    "upstream": self.upstream, "enabled": True})
            except ToxiproxyError as e:  # lost the race for the port
                last = e
                continue
            self.port = port
            return self
        raise ToxiproxyError(f"cannot create proxy {self.name}: {last}")

    def delete(self) -> None:
        for t in self._timers:
            t.cancel()
        try:
            self.server.request("DELETE", f"/proxies/{self.name}")
        except (ToxiproxyError, OSError):
            pass

    # ---- toxics ----
    def add(self, type_: str, stream: str = "downstream", toxicity: float = 1.0,
            name: Optional[str] = None, **attributes) -> str:
        if stream not in STREAMS:
            raise ValueError(f"stream must be one of {STREAMS}")
        name = name or f"{type_}-{stream}-{uuid.uuid4().hex[:6]}"
        self.server.request("POST", f"/proxies/{self.name}/toxics", {
            "name": name, "type": type_, "stream": stream, "toxicity": toxicity,
            "attributes": attributes})
        return name

    def remove(self, name: str) -> None:
        """Remove a toxic; one already gone is fine."""
        try:
            self.server.request("DELETE", f"/proxies/{self.name}/toxics/{name}")
        except ToxiproxyError as e:
            if "HTTP 404" not in str(e):
                raise

    def remove_after(self, name: str, seconds: float) -> threading.Timer:
        """Remove the toxic `seconds` from now, from a timer thread (cancelled at the end)."""
        t = threading.Timer(seconds, self.remove, args=(name,))
        t.daemon = True
        self._timers.append(t)
        t.start()
        return t

    def toxics(self) -> list:
        return self.server.request("GET", f"/proxies/{self.name}/toxics") or []

    def clear(self) -> None:
        for t in self.toxics():
            self.remove(t["name"])

    def reset_peer(self, timeout_ms: int = 0, stream: str = "upstream", **kw) -> str:
        return self.add("reset_peer", stream, timeout=int(timeout_ms), **kw)

    def latency(self, ms: int, jitter_ms: int = 0, stream: str = "downstream", **kw) -> str:
        return self.add("latency", stream, latency=int(ms), jitter=int(jitter_ms), **kw)

    def bandwidth(self, kb_per_s: int, stream: str = "downstream", **kw) -> str:
        return self.add("bandwidth", stream, rate=int(kb_per_s), **kw)

    def timeout(self, ms: int = 0, stream: str = "upstream", **kw) -> str:
        return self.add("timeout", stream, timeout=int(ms), **kw)

    def limit_data(self, n_bytes: int, stream: str = "upstream", **kw) -> str:
        return self.add("limit_data", stream, bytes=int(n_bytes), **kw)

    def slicer(self, average_size: int, size_variation: int = 0, delay_us: int = 0,
               stream: str = "downstream", **kw) -> str:
        return self.add("slicer", stream, average_size=int(average_size),
                        size_variation=int(size_variation), delay=int(delay_us), **kw)


@pytest.fixture(scope="session")
def toxiproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Toxiproxy]:
    binary = TOOLS_BIN / "toxiproxy-server"
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(f"toxiproxy is not built: no executable {binary} (run scripts/check, or "
                    "bash -c '. scripts/lib/testbed.sh; ms_build_toxiproxy')", pytrace=False)
    server = Toxiproxy(binary, tmp_path_factory.mktemp("toxiproxy"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def minio_proxy(toxiproxy: Toxiproxy, minio) -> Iterator[Proxy]:
    proxy = Proxy(toxiproxy, f"minio-{uuid.uuid4().hex[:8]}", f"127.0.0.1:{minio.port}").create()
    try:
        yield proxy
    finally:
        proxy.delete()
