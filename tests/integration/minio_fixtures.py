"""MinIO for the S3 storage tests (test_storage_s3.py): a server on loopback started once per
session from $MONGOSNAP_TOOLS_BIN/minio (scripts/lib/testbed.sh: ms_build_minio), and a fresh
bucket per test.

  minio      (session) MinIO: .endpoint ("http://127.0.0.1:PORT") .access_key .secret_key
             .client (boto3) .datadir .logfile, .log_text(); stopped at the end of the session
  s3_bucket  (function) the name of a new, empty bucket on it (emptied and removed afterwards)

Import them into a test module with `from minio_fixtures import *  # noqa: F401,F403`.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Iterator, Optional

import boto3
import botocore.config
import pytest

from conftest import TOOLS_BIN, _die_with_parent, free_port

START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
POLL_INTERVAL = 0.1
START_ATTEMPTS = 3  # free_port() is racy: another process may take the port first
# Distinctive values, so a test can tell for sure that neither ever appears in output.
ACCESS_KEY = "mstestAKID7Q2X9"
SECRET_KEY = "mstest-Secr3t-W4q8-Zr1p"
REGION = "us-east-1"


class MinIO:
    """One MinIO server with its data under workdir."""

    def __init__(self, binary: Path, workdir: Path):
        self.binary = Path(binary)
        self.workdir = Path(workdir)
        self.datadir = self.workdir / "data"
        self.logfile = self.workdir / "minio.log"
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY
        self.region = REGION
        self.port: Optional[int] = None
        self.proc: Optional[subprocess.Popen] = None
        self._client = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def location(self, bucket: str, prefix: str = "", **options: str) -> str:
        """s3://bucket[/prefix]?endpoint=...&OPTIONS for --store."""
        query = "&".join([f"endpoint={self.endpoint}"] + [f"{k}={v}" for k, v in options.items()])
        return f"s3://{bucket}{'/' + prefix if prefix else ''}?{query}"

    @property
    def client(self):
        if self._client is None:
            self._client = boto3.client(
                "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                aws_secret_access_key=self.secret_key, region_name=self.region,
                config=botocore.config.Config(s3={"addressing_style": "path"},
                                              retries={"max_attempts": 3}))
        return self._client

    def start(self) -> "MinIO":
        self.datadir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, MINIO_ROOT_USER=self.access_key, MINIO_ROOT_PASSWORD=self.secret_key,
                   MINIO_BROWSER="off", MINIO_UPDATE="off")
        last_log = ""
        for _ in range(START_ATTEMPTS):
            self.port = free_port()
            console = free_port()
            cmd = [str(self.binary), "server", str(self.datadir), "--quiet",
                   "--address", f"127.0.0.1:{self.port}", "--console-address", f"127.0.0.1:{console}"]
            with open(self.logfile, "ab") as log:
                self.proc = subprocess.Popen(_die_with_parent(cmd), stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=subprocess.STDOUT, env=env)
            if self._wait_ready():
                return self
            last_log = self.log_text()[-4000:]
            self._kill()
        pytest.fail(f"MinIO did not become ready on 127.0.0.1 (see {self.logfile}):\n{last_log}",
                    pytrace=False)

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        url = f"{self.endpoint}/minio/health/ready"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
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

    # ---- bucket helpers ----
    def keys(self, bucket: str, prefix: str = "") -> list:
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            out += [o["Key"] for o in page.get("Contents", [])]
        return sorted(out)

    def uploads(self, bucket: str, key: Optional[str] = None) -> list:
        """In-progress multipart uploads (MinIO lists them for one exact key or for all)."""
        kw = {"Prefix": key} if key else {}
        return self.client.list_multipart_uploads(Bucket=bucket, **kw).get("Uploads", [])

    def empty_bucket(self, bucket: str) -> None:
        for u in self.uploads(bucket):
            self.client.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
        for key in self.keys(bucket):
            self.client.delete_object(Bucket=bucket, Key=key)


@pytest.fixture(scope="session")
def minio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MinIO]:
    binary = TOOLS_BIN / "minio"
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(f"minio is not built: no executable {binary} (run scripts/check, or "
                    "bash -c '. scripts/lib/testbed.sh; ms_build_minio')", pytrace=False)
    server = MinIO(binary, tmp_path_factory.mktemp("minio"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(minio: MinIO) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:20]}"
    minio.client.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        try:
            minio.empty_bucket(name)
            minio.client.delete_bucket(Bucket=name)
        except Exception:  # the server may be gone at the end of a failed session
            pass
