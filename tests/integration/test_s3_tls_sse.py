"""The S3 driver against MinIO over TLS (a private CA, and the system CA store), with
server-side encryption (SSE-S3 and SSE-KMS) and with virtual-hosted addressing. Each group has
its own MinIO process (module scope), started like minio_fixtures.MinIO and stopped afterwards;
the session server of minio_fixtures is not touched.

Covered:
  * TLS, private CA: openssl makes a CA and a certificate for 127.0.0.1/localhost/*.localhost;
    MinIO serves https with --certs-dir. snapshot/verify/restore with ca=CA work; without ca=
    and with another CA the worker fails with exit 4 and a TLS message, never a credential;
    the driver's presigned URL downloads with `curl --cacert`.
  * TLS, system CA store: the driver without ca= trusts the system store (libcurl's built-in
    bundle /etc/ssl/certs/ca-certificates.crt). The host's store is never modified: the worker
    runs in a private mount namespace (unshare -m) where our CA is bind-mounted over that
    file. SSL_CERT_FILE and CURL_CA_BUNDLE are NOT honoured by the driver (libcurl reads
    neither; only the curl command-line tool does), which the test checks and documents.
    Skipped only when unshare/mount namespaces are not permitted here.
  * SSE: MinIO with a static KMS key (MINIO_KMS_SECRET_KEY, auto-encryption off). sse=AES256:
    archive (multipart) and manifest report ServerSideEncryption AES256 (boto3 head_object),
    a recording proxy in front of MinIO shows the header on PUT and CreateMultipartUpload and
    on no UploadPart/Complete/GET; restore works. sse=aws:kms&kms_key_id=KEY: objects are
    aws:kms with that key; an unknown key id is refused clearly.
  * Virtual-hosted addressing: MinIO with MINIO_DOMAIN=localhost; the driver with
    addressing=virtual&endpoint=http://localhost:PORT reaches bucket.localhost:PORT (curl
    resolves *.localhost to loopback itself; glibc does not). Snapshot and verify work, the
    recording proxy sees Host bucket.localhost:PORT and paths without the bucket, and keys
    land without a bucket prefix; the presigned URL is virtual-hosted and downloads. The same
    over https (certificate for *.localhost, ca=).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import http.server
import os
import shutil
import socketserver
import ssl
import subprocess
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import List, Optional

import boto3
import botocore.config
import pytest

import helpers as h
from conftest import TOOLS_BIN, _die_with_parent, free_port
from minio_fixtures import ACCESS_KEY, SECRET_KEY, MinIO
from test_storage_s3 import (DB, assert_no_credentials, env_credentials, load_random, run_text,
                             run_tool, snapshot)

KMS_KEY = "ms-test-key"
KMS_SECRET = f"{KMS_KEY}:{base64.b64encode(hashlib.sha256(b'mongosnap kms').digest()).decode()}"
START_TIMEOUT = 60.0
PART = 5 * 1024 * 1024
SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# TLS + virtual-hosted: the certificate names this bucket's host. OpenSSL (and so curl) does
# not let the wildcard *.localhost match anything: a wildcard needs two labels after it.
VHOST_BUCKET = "ms-vhost-tls"


# ---- servers --------------------------------------------------------------------------------

class ExtraMinIO(MinIO):
    """A MinIO with extra environment, optionally https (certs_dir) and a host name."""

    def __init__(self, binary: Path, workdir: Path, env: Optional[dict] = None,
                 certs_dir: Optional[Path] = None, ca: Optional[Path] = None,
                 host: str = "127.0.0.1"):
        super().__init__(binary, workdir)
        self.extra_env = env or {}
        self.certs_dir = certs_dir
        self.ca = ca
        self.host = host

    @property
    def scheme(self) -> str:
        return "https" if self.certs_dir else "http"

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def client(self):
        if self._client is None:
            self._client = boto3.client(
                "s3", endpoint_url=f"{self.scheme}://127.0.0.1:{self.port}",
                aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
                region_name=self.region, verify=str(self.ca) if self.ca else None,
                config=botocore.config.Config(s3={"addressing_style": "path"},
                                              retries={"max_attempts": 3}))
        return self._client

    def start(self) -> "ExtraMinIO":
        self.datadir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, MINIO_ROOT_USER=self.access_key, MINIO_ROOT_PASSWORD=self.secret_key,
                   MINIO_BROWSER="off", MINIO_UPDATE="off", **self.extra_env)
        for _ in range(3):
            self.port = free_port()
            cmd = [str(self.binary), "server", str(self.datadir), "--quiet",
                   "--address", f"127.0.0.1:{self.port}",
                   "--console-address", f"127.0.0.1:{free_port()}"]
            if self.certs_dir:
                cmd += ["--certs-dir", str(self.certs_dir)]
            with open(self.logfile, "ab") as log:
                self.proc = subprocess.Popen(_die_with_parent(cmd), stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=subprocess.STDOUT, env=env)
            if self._wait_ready():
                return self
            self._kill()
        pytest.fail(f"MinIO did not start:\n{self.log_text()[-4000:]}", pytrace=False)

    def _wait_ready(self) -> bool:
        ctx = ssl.create_default_context(cafile=str(self.ca)) if self.ca else None
        url = f"{self.scheme}://127.0.0.1:{self.port}/minio/health/ready"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(url, timeout=2, context=ctx) as r:
                    if r.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def new_bucket(self) -> str:
        name = f"t-{uuid.uuid4().hex[:20]}"
        self.client.create_bucket(Bucket=name)
        return name


def minio_binary() -> Path:
    binary = TOOLS_BIN / "minio"
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(f"minio is not built: no executable {binary}", pytrace=False)
    return binary


def openssl(*args: str, cwd: Path) -> None:
    cp = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, timeout=60)
    assert cp.returncode == 0, cp.stderr.decode()


def make_ca(d: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """ca.pem (signs the server's certificate), other-ca.pem (signs nothing we serve),
    certs/public.crt + certs/private.key for 127.0.0.1, localhost, *.localhost (which matches
    nothing, see VHOST_BUCKET) and VHOST_BUCKET.localhost."""
    if not shutil.which("openssl"):
        pytest.fail("the openssl command is missing", pytrace=False)
    d = tmp_path_factory.mktemp("pki")
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:*.localhost,"
                               f"DNS:{VHOST_BUCKET}.localhost\n"
                               "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-keyout", "server.key", "-out", "server.csr", cwd=d)
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "server.crt", cwd=d)
    certs = d / "certs"
    certs.mkdir()
    shutil.copy(d / "server.crt", certs / "public.crt")
    shutil.copy(d / "server.key", certs / "private.key")
    return d


@pytest.fixture(scope="module")
def tls_minio(pki, tmp_path_factory):
    server = ExtraMinIO(minio_binary(), tmp_path_factory.mktemp("minio-tls"),
                        env={"MINIO_DOMAIN": "localhost"}, certs_dir=pki / "certs",
                        ca=pki / "ca.pem")
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def kms_minio(tmp_path_factory):
    """http, a static KMS key (SSE-S3 and SSE-KMS), no auto-encryption, domain localhost."""
    server = ExtraMinIO(minio_binary(), tmp_path_factory.mktemp("minio-kms"),
                        env={"MINIO_KMS_SECRET_KEY": KMS_SECRET, "MINIO_KMS_AUTO_ENCRYPTION": "off",
                             "MINIO_DOMAIN": "localhost"})
    try:
        yield server.start()
    finally:
        server.stop()


class RecordingProxy:
    """A loopback HTTP/1.1 forwarder that passes requests through unchanged (Host included, so
    signatures still match) and records (method, host, path, SSE headers) of each."""

    def __init__(self, upstream_port: int):
        self.records: List[dict] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                proxy.records.append({
                    "method": self.command, "host": self.headers.get("Host"), "path": self.path,
                    "sse": self.headers.get("x-amz-server-side-encryption"),
                    "kms": self.headers.get("x-amz-server-side-encryption-aws-kms-key-id")})
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
                conn.putrequest(self.command, self.path, skip_host=True,
                                skip_accept_encoding=True)
                for k, v in self.headers.items():
                    if k.lower() not in ("expect", "connection"):
                        conn.putheader(k, v)
                conn.endheaders(body)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response_only(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                if self.command != "HEAD" or resp.getheader("Content-Length") is None:
                    self.send_header("Content-Length", str(len(data)))
                else:
                    self.send_header("Content-Length", resp.getheader("Content-Length"))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(kms_minio):
    p = RecordingProxy(kms_minio.port)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def source(fresh_db, tmp_path):
    client = fresh_db.client
    h.load_simple_dataset(client, DB, {"orders": 300, "users": 50})
    client[DB]["orders"].create_index("group")
    fresh_db.uri_file = h.write_uri_file(tmp_path, fresh_db.uri)
    return fresh_db


def restore_and_compare(tools, ferretdb_factory, tmp_path, store, name, env, source_client):
    target = ferretdb_factory(name="tls-target")
    uri = h.write_uri_file(tmp_path, target.uri, "target-uri")
    run = h.expect_ok(h.run_worker(tools, "restore", "--uri-file", uri, "--store", store,
                                   "--snapshot", name, "--drop", env=env))
    assert_no_credentials(run_text(run))
    assert h.digest(target.client, [DB]) == h.digest(source_client, [DB])


# ---- TLS ---------------------------------------------------------------------------------------

def test_tls_with_private_ca(tools, source, tls_minio, pki, ferretdb_factory, tmp_path):
    bucket = tls_minio.new_bucket()
    env = env_credentials(tmp_path)
    store = tls_minio.location(bucket, "p", ca=str(pki / "ca.pem"))
    assert store.startswith(f"s3://{bucket}/p?endpoint=https://127.0.0.1:")
    run = h.expect_ok(snapshot(tools, source, store, "tls", env))
    assert_no_credentials(run_text(run))
    assert tls_minio.keys(bucket) == ["p/tls.archive.zst", "p/tls.manifest.json"]
    h.expect_ok(h.run_worker(tools, "verify", "--store", store, "--snapshot", "tls", env=env))
    restore_and_compare(tools, ferretdb_factory, tmp_path, store, "tls", env, source.client)

    # The presigned URL is https and downloads with the CA (and not without it).
    url = run_tool(env, "url", store, "tls.manifest.json", "300").stdout.decode().strip()
    assert url.startswith(f"https://127.0.0.1:{tls_minio.port}/{bucket}/p/tls.manifest.json?")
    out = tmp_path / "manifest"
    cp = subprocess.run(["curl", "-sS", "-f", "--cacert", str(pki / "ca.pem"), "-o", str(out), url],
                        capture_output=True, timeout=30)
    assert cp.returncode == 0, cp.stderr.decode()
    assert out.read_bytes() == tls_minio.client.get_object(
        Bucket=bucket, Key="p/tls.manifest.json")["Body"].read()
    cp = subprocess.run(["curl", "-sS", "-f", "-o", "/dev/null", url], capture_output=True,
                        timeout=30, env={**os.environ, "CURL_CA_BUNDLE": SYSTEM_BUNDLE})
    assert cp.returncode == 60, "curl trusted the private CA without --cacert"


@pytest.mark.parametrize("ca", ["none", "other"])
def test_tls_untrusted_certificate_fails_clearly(tools, source, tls_minio, pki, tmp_path, ca):
    bucket = tls_minio.new_bucket()
    options = {"max_attempts": "2"}
    if ca == "other":
        options["ca"] = str(pki / "other-ca.pem")
    store = tls_minio.location(bucket, "p", **options)
    started = time.monotonic()
    run = snapshot(tools, source, store, "refused", env_credentials(tmp_path), progress=True)
    assert run.returncode == h.EXIT_UNREACHABLE, run.describe()
    assert f"the TLS connection to https://127.0.0.1:{tls_minio.port} failed" in run.output
    assert "SSL certificate problem" in run.output  # curl's reason
    if ca == "none":
        assert "add ca=/path/to/ca.pem" in run.output
    else:
        assert f"check that ca={pki / 'other-ca.pem'} holds the CA that signed" in run.output
    assert time.monotonic() - started < 30, "a certificate failure was retried"
    assert_no_credentials(run_text(run))
    assert tls_minio.keys(bucket) == [] and tls_minio.uploads(bucket) == []


def test_tls_unusable_ca_file_fails_clearly(tools, source, tls_minio, tmp_path):
    bucket = tls_minio.new_bucket()
    missing = tmp_path / "no-such-ca.pem"
    run = snapshot(tools, source, tls_minio.location(bucket, "p", ca=str(missing)), "x",
                   env_credentials(tmp_path), progress=True)
    assert run.returncode == h.EXIT_USAGE, run.describe()
    assert f"cannot open the CA file ca={missing}: No such file or directory" in run.output
    assert "snapshot x of" not in run.output, "the store was opened only after the dump began"
    assert_no_credentials(run_text(run))

    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    run = snapshot(tools, source, tls_minio.location(bucket, "p", ca=str(garbage)), "x",
                   env_credentials(tmp_path), progress=True)
    assert run.returncode == h.EXIT_USAGE, run.describe()
    assert f"cannot use the CA file ca={garbage} of the store location" in run.output
    assert_no_credentials(run_text(run))
    assert tls_minio.keys(bucket) == [] and tls_minio.uploads(bucket) == []


def unshare_usable() -> Optional[str]:
    """None when a private mount namespace with a bind mount can be made here, else why not."""
    if not shutil.which("unshare"):
        return "no unshare command"
    cp = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                         f"mount --bind /dev/null {SYSTEM_BUNDLE}"],
                        capture_output=True, timeout=30)
    if cp.returncode != 0:
        return f"cannot bind-mount in a private mount namespace: {cp.stderr.decode().strip()}"
    return None


def system_store_wrap(pki: Path, tmp_path: Path, mode: str) -> list:
    """A command prefix that runs a program in a private mount namespace whose system CA store
    trusts our CA: mode "bundle" bind-mounts ca.pem over the bundle file (libcurl's CAINFO),
    mode "dir*" a directory over /etc/ssl/certs where ca.pem is only under its hash name (the
    CAPATH) and the bundle holds an unrelated CA, so each of libcurl's two default places is
    tried on its own."""
    if mode == "bundle":
        return ["unshare", "-m", "--propagation", "private", "sh", "-c",
                f'mount --bind "$0" {SYSTEM_BUNDLE} && exec "$@"', str(pki / "ca.pem")]
    d = tmp_path / f"certs-{mode}"
    d.mkdir()
    cp = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", str(pki / "ca.pem")],
                        capture_output=True, timeout=30, check=True)
    shutil.copy(pki / "ca.pem", d / f"{cp.stdout.decode().strip()}.0")
    shutil.copy(pki / "other-ca.pem", d / "ca-certificates.crt")
    assert any(p.name.endswith(".0") for p in d.iterdir())
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" /etc/ssl/certs && exec "$@"', str(d)]


def run_wrapped(wrap: list, worker: str, args: list, env: dict) -> subprocess.CompletedProcess:
    cp = subprocess.run(wrap + [worker, *args], capture_output=True, timeout=120, env=env,
                        stdin=subprocess.DEVNULL)
    assert_no_credentials(cp.stdout.decode() + cp.stderr.decode())
    return cp


def test_tls_system_ca_store(tools, source, tls_minio, pki, tmp_path):
    """No ca=: the system store is used. Our CA is put into it only inside a private mount
    namespace of the worker (bind mount), so the host's store is untouched. Also: SSL_CERT_FILE
    and CURL_CA_BUNDLE do not change what the driver trusts (libcurl reads neither), and ca=
    replaces the system store rather than adding to it (libcurl's default CApath
    /etc/ssl/certs is switched off)."""
    bucket = tls_minio.new_bucket()
    store = tls_minio.location(bucket, "sys")
    env = env_credentials(tmp_path)
    worker = str(tools.require("worker"))

    # The environment variables of OpenSSL and of the curl tool are not honoured.
    run = snapshot(tools, source, store, "env", {**env, "SSL_CERT_FILE": str(pki / "ca.pem"),
                                                  "CURL_CA_BUNDLE": str(pki / "ca.pem")})
    assert run.returncode == h.EXIT_UNREACHABLE, run.describe()
    assert "TLS connection" in run.output

    why = unshare_usable()
    if why:
        pytest.skip(f"system CA store not testable without touching the host's: {why}")
    snap = ["snapshot", "--uri-file", str(source.uri_file), "--store", store, "--name", "system"]
    cp = run_wrapped(system_store_wrap(pki, tmp_path, "bundle"), worker, snap, env)
    assert cp.returncode == 0, cp.stderr.decode()
    cp = run_wrapped(system_store_wrap(pki, tmp_path, "dir"), worker,
                     ["verify", "--store", store, "--snapshot", "system"], env)
    assert cp.returncode == 0, cp.stderr.decode()
    assert tls_minio.keys(bucket) == ["sys/system.archive.zst", "sys/system.manifest.json"]

    # ca= is the only trust: with another CA there, a server the system store trusts (either
    # way) is refused.
    other = tls_minio.location(bucket, "sys", ca=str(pki / "other-ca.pem"), max_attempts="1")
    for mode in ("bundle", "dir2"):
        wrap = system_store_wrap(pki, tmp_path, mode)
        cp = run_wrapped(wrap, worker, ["verify", "--store", other, "--snapshot", "system"], env)
        assert cp.returncode == h.EXIT_UNREACHABLE, (mode, cp.stderr.decode())
        assert "TLS connection" in cp.stderr.decode()
    # The host's bundle was never changed.
    with open(SYSTEM_BUNDLE, "rb") as f:
        assert b"BEGIN CERTIFICATE" in f.read(4096)


# ---- SSE ---------------------------------------------------------------------------------------

def test_sse_s3_multipart_and_single(tools, fresh_db, kms_minio, proxy, ferretdb_factory,
                                     tmp_path):
    load_random(fresh_db.client, n_docs=24, doc_bytes=512 * 1024, seed=7)  # ~12 MiB
    fresh_db.uri_file = h.write_uri_file(tmp_path, fresh_db.uri)
    bucket = kms_minio.new_bucket()
    env = env_credentials(tmp_path)
    store = (f"s3://{bucket}/enc?endpoint=http://127.0.0.1:{proxy.port}&sse=AES256"
             "&part_size=5MiB&parallel=2")
    run = h.expect_ok(snapshot(tools, fresh_db, store, "sse", env, "--compression", "none"))
    assert_no_credentials(run_text(run))

    archive = kms_minio.client.head_object(Bucket=bucket, Key="enc/sse.archive")
    manifest = kms_minio.client.head_object(Bucket=bucket, Key="enc/sse.manifest.json")
    assert archive["ServerSideEncryption"] == "AES256"
    assert manifest["ServerSideEncryption"] == "AES256"
    assert archive["ContentLength"] > 2 * PART
    # With SSE-S3 the multipart ETag is still the MD5 of the parts' MD5s ("-N"), which the
    # driver relies on when a CompleteMultipartUpload's answer was lost.
    data = kms_minio.client.get_object(Bucket=bucket, Key="enc/sse.archive")["Body"].read()
    chunks = [data[i:i + PART] for i in range(0, len(data), PART)]
    assert archive["ETag"].strip('"') == hashlib.md5(
        b"".join(hashlib.md5(c).digest() for c in chunks)).hexdigest() + f"-{len(chunks)}"

    writes = [r for r in proxy.records if r["method"] in ("PUT", "POST")]
    creates = [r for r in writes if r["method"] == "POST" and r["path"].endswith("?uploads=")]
    parts = [r for r in writes if "partNumber=" in r["path"]]
    completes = [r for r in writes if r["method"] == "POST" and "uploadId=" in r["path"]]
    singles = [r for r in writes if r["method"] == "PUT" and "?" not in r["path"]]
    assert len(creates) == 1 and creates[0]["sse"] == "AES256", writes
    assert len(parts) >= 3 and all(p["sse"] is None for p in parts), parts
    assert completes and all(c["sse"] is None for c in completes)
    assert singles and all(s["sse"] == "AES256" for s in singles), singles
    assert all(r["sse"] is None for r in proxy.records if r["method"] in ("GET", "HEAD", "DELETE"))

    h.expect_ok(h.run_worker(tools, "verify", "--store", store, "--snapshot", "sse", env=env))
    target = ferretdb_factory(name="sse-target")
    uri = h.write_uri_file(tmp_path, target.uri, "target-uri")
    h.expect_ok(h.run_worker(tools, "restore", "--uri-file", uri, "--store", store,
                             "--snapshot", "sse", "--drop", env=env))
    assert h.digest(target.client, ["s3data"]) == h.digest(fresh_db.client, ["s3data"])

    # Control: without sse= the same server stores unencrypted objects (no auto-encryption).
    plain = kms_minio.location(bucket, "plain")
    h.expect_ok(snapshot(tools, fresh_db, plain, "plain", env, "--compression", "none"))
    assert "ServerSideEncryption" not in kms_minio.client.head_object(
        Bucket=bucket, Key="plain/plain.manifest.json")


def test_sse_kms_with_key_id(tools, source, kms_minio, proxy, ferretdb_factory, tmp_path):
    bucket = kms_minio.new_bucket()
    env = env_credentials(tmp_path)
    store = (f"s3://{bucket}/kms?endpoint=http://127.0.0.1:{proxy.port}&sse=aws:kms"
             f"&kms_key_id={KMS_KEY}")
    h.expect_ok(snapshot(tools, source, store, "kms", env))
    for key in ("kms/kms.archive.zst", "kms/kms.manifest.json"):
        head = kms_minio.client.head_object(Bucket=bucket, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms", key
        assert head["SSEKMSKeyId"].endswith(KMS_KEY), head["SSEKMSKeyId"]
    puts = [r for r in proxy.records if r["method"] == "PUT"]
    assert puts and all(r["sse"] == "aws:kms" and r["kms"] == KMS_KEY for r in puts)
    h.expect_ok(h.run_worker(tools, "verify", "--store", store, "--snapshot", "kms", env=env))
    restore_and_compare(tools, ferretdb_factory, tmp_path, store, "kms", env, source.client)

    # A key the KMS does not have: refused, nothing written, no credential in the message.
    bad = kms_minio.location(bucket, "bad", sse="aws:kms", kms_key_id="no-such-key",
                             max_attempts="2")
    run = snapshot(tools, source, bad, "bad", env, progress=True)
    assert run.returncode == h.EXIT_USAGE, run.describe()
    assert "cannot encrypt with the KMS key no-such-key" in run.output, run.output
    assert "check kms_key_id= in the store location" in run.output
    assert_no_credentials(run_text(run))
    assert kms_minio.keys(bucket, "bad/") == []


# ---- virtual-hosted addressing ------------------------------------------------------------------

def test_virtual_hosted_addressing(tools, source, kms_minio, proxy, tmp_path):
    bucket = kms_minio.new_bucket()
    env = env_credentials(tmp_path)
    store = f"s3://{bucket}/vh?endpoint=http://localhost:{proxy.port}&addressing=virtual"
    run = h.expect_ok(snapshot(tools, source, store, "virt", env))
    assert_no_credentials(run_text(run))
    h.expect_ok(h.run_worker(tools, "verify", "--store", store, "--snapshot", "virt", env=env))
    # Keys have no bucket prefix: the bucket travelled in the host name only.
    assert kms_minio.keys(bucket) == ["vh/virt.archive.zst", "vh/virt.manifest.json"]
    assert proxy.records
    for r in proxy.records:
        assert r["host"] == f"{bucket}.localhost:{proxy.port}", r
        assert not r["path"].startswith(f"/{bucket}"), r

    # The listing (bucket-level GET on "/") and a presigned virtual-hosted URL.
    listing = run_tool(env, "list", store, "").stdout.decode()
    assert " virt.manifest.json" in listing
    url = run_tool(env, "url", store, "virt.manifest.json", "300").stdout.decode().strip()
    assert url.startswith(f"http://{bucket}.localhost:{proxy.port}/vh/virt.manifest.json?")
    cp = subprocess.run(["curl", "-sS", "-f", "-o", "/dev/null", url], capture_output=True,
                        timeout=30)
    assert cp.returncode == 0, cp.stderr.decode()

    # Directly against MinIO too (MINIO_DOMAIN=localhost), not only through the proxy.
    direct = f"s3://{bucket}/vh?endpoint=http://localhost:{kms_minio.port}&addressing=virtual"
    h.expect_ok(h.run_worker(tools, "verify", "--store", direct, "--snapshot", "virt", env=env))


def test_virtual_hosted_addressing_over_tls(tools, source, tls_minio, pki, tmp_path):
    """https://BUCKET.localhost:PORT checked against the certificate (DNS:BUCKET.localhost);
    a bucket the certificate does not name fails with the host name in the message."""
    bucket = VHOST_BUCKET
    tls_minio.client.create_bucket(Bucket=bucket)
    env = env_credentials(tmp_path)
    store = (f"s3://{bucket}/vt?endpoint=https://localhost:{tls_minio.port}&addressing=virtual"
             f"&ca={pki / 'ca.pem'}")
    h.expect_ok(snapshot(tools, source, store, "virt", env))
    h.expect_ok(h.run_worker(tools, "verify", "--store", store, "--snapshot", "virt", env=env))
    assert tls_minio.keys(bucket) == ["vt/virt.archive.zst", "vt/virt.manifest.json"]
    url = run_tool(env, "url", store, "virt.manifest.json", "300").stdout.decode().strip()
    assert url.startswith(f"https://{bucket}.localhost:{tls_minio.port}/vt/virt.manifest.json?")
    cp = subprocess.run(["curl", "-sS", "-f", "--cacert", str(pki / "ca.pem"), "-o", "/dev/null",
                         url], capture_output=True, timeout=30)
    assert cp.returncode == 0, cp.stderr.decode()

    other = tls_minio.new_bucket()
    run = snapshot(tools, source, store.replace(bucket, other), "x", env, progress=True)
    assert run.returncode == h.EXIT_UNREACHABLE, run.describe()
    assert f"target host name '{other}.localhost'" in run.output
    assert "the endpoint's host name matches the certificate" in run.output
    assert_no_credentials(run_text(run))
