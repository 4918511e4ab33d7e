"""Fixtures for mongosnap's integration tests.

The tests talk to real servers (see TESTBED.md): FerretDB 1.24 on SQLite as the
MongoDB-compatible server, and the stock mongodump/mongorestore.  scripts/check
builds them and sets:

  MONGOSNAP_TOOLS_BIN   directory with ferretdb, mongodump, mongorestore
                        (default ~/.cache/mongosnap-tools/bin)
  MONGOSNAP_BUILD_DIR   meson build directory with our binaries (default <repo>/build-test)

Fixtures
  tools             (session) Tools: .ferretdb .mongodump .mongorestore .worker (Paths),
                    .bin_dir .build_dir, .require(name) -> Path, .run(name, *args) -> CompletedProcess
  ferretdb          (session) FerretDB shared by the session: .uri .port .address .client
                    .datadir .logfile, .new_client(**kw), .uri_with(...), .log_text()
  ferretdb_factory  (function) ferretdb_factory(name="target", auth=None, extra_args=())
                    starts another isolated FerretDB (stopped after the test);
                    auth=("user", "pw") enables SCRAM auth with that first user in admin.
  fresh_db          (function) the session FerretDB with every non-system database
                    dropped (and local.* cleared, e.g. a hand-made oplog) before the test.

On a test failure the server logs written during the test are attached to the report.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence, Tuple

import pymongo
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = Path(os.environ.get("MONGOSNAP_TOOLS_BIN") or Path.home() / ".cache/mongosnap-tools/bin")
BUILD_DIR = Path(os.environ.get("MONGOSNAP_BUILD_DIR") or REPO_ROOT / "build-test")

# Hermetic credentials: a test never reads the machine's /etc/mongosnap/credentials.  Tests
# that want a store point MONGOSNAP_CREDENTIAL_STORE (or CREDENTIALS_DIRECTORY) somewhere.
os.environ.setdefault("MONGOSNAP_CREDENTIAL_STORE", "/nonexistent/mongosnap-test-credentials")

START_TIMEOUT = float(os.environ.get("MONGOSNAP_FERRETDB_START_TIMEOUT", "30"))
STOP_TIMEOUT = 10.0
TOOL_TIMEOUT = 300.0
CLIENT_OPTIONS = dict(serverSelectionTimeoutMS=10_000, connectTimeoutMS=5_000, socketTimeoutMS=120_000)
REPLICA_SET = "rs0"
# Databases fresh_db keeps.  "local" is emptied instead (tests create local.oplog.rs by hand).
KEEP_DATABASES = frozenset({"admin", "config"})
LOG_TAIL_CHARS = 20_000


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (racy by nature: callers retry on EADDRINUSE)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Children get SIGKILL if pytest dies (timeout, kill -9), so no server outlives a run.
# setpriv (util-linux) sets PR_SET_PDEATHSIG and execs: no preexec_fn in a threaded process.
_SETPRIV = shutil.which("setpriv")


def _die_with_parent(cmd: Sequence[str]) -> list:
    return [_SETPRIV, "--pdeathsig", "KILL", "--", *cmd] if _SETPRIV else list(cmd)


def _is_executable(p: Path) -> bool:
    return p.is_file() and os.access(p, os.X_OK)


@dataclass(frozen=True)
class Tools:
    bin_dir: Path
    build_dir: Path
    ferretdb: Path
    mongodump: Path
    mongorestore: Path
    worker: Path  # $MONGOSNAP_BUILD_DIR/src/worker/mongosnap-worker (may not be built yet)

    def require(self, name: str) -> Path:
        """Path of tool `name`; fails the test with a clear message if it is not built."""
        p: Path = getattr(self, name)
        if not _is_executable(p):
            pytest.fail(f"{name} is not built: no executable {p} (run scripts/check)", pytrace=False)
        return p

    def run(self, name: str, *args: str, timeout: float = TOOL_TIMEOUT, check: bool = True,
            **kwargs) -> subprocess.CompletedProcess:
        """Run tool `name` with a bounded time, capturing text output; on a non-zero exit
        (when check) fail with the command line and its output."""
        cmd = [str(self.require(name)), *map(str, args)]
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        try:
            cp = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"timed out after {timeout}s: {' '.join(cmd)}\nstdout:\n{e.stdout}\nstderr:\n{e.stderr}",
                        pytrace=False)
        if check and cp.returncode != 0:
            pytest.fail(f"exit {cp.returncode}: {' '.join(cmd)}\nstdout:\n{cp.stdout}\nstderr:\n{cp.stderr}",
                        pytrace=False)
        return cp


class FerretDB:
    """One FerretDB process (SQLite backend) on a free loopback port, files under workdir."""

    _seq = 0
    instances: list = []  # every server started in this session, for failure reports

    def __init__(self, binary: Path, workdir: Path, name: str = "ferretdb",
                 auth: Optional[Tuple[str, str]] = None, extra_args: Sequence[str] = ()):
        self.binary = Path(binary)
        self.workdir = Path(workdir)
        self.name = name
        self.auth = auth
        self.extra_args = list(extra_args)
        self.datadir = self.workdir / "data"
        self.statedir = self.workdir / "state"
        self.logfile = self.workdir / "ferretdb.log"
        self.port: Optional[int] = None
        self.proc: Optional[subprocess.Popen] = None
        self._client: Optional[pymongo.MongoClient] = None
        self._clients: list = []
        FerretDB._seq += 1
        self.seq = FerretDB._seq
        FerretDB.instances.append(self)

    # ---- addresses ----
    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def uri(self) -> str:
        """mongodb://[user:pw@]127.0.0.1:PORT/?replicaSet=rs0[&authSource=admin]"""
        if self.auth:
            return self.uri_with(*self.auth)
        return self.uri_with()

    def uri_with(self, user: Optional[str] = None, password: Optional[str] = None, **options: str) -> str:
        """A URI for this server with other credentials (e.g. wrong ones) or extra options."""
        cred = ""
        opts = {"replicaSet": REPLICA_SET}
        if user is not None:
            cred = urllib.parse.quote_plus(user)
            if password is not None:
                cred += ":" + urllib.parse.quote_plus(password)
            cred += "@"
            opts["authSource"] = "admin"
        opts.update(options)
        return f"mongodb://{cred}{self.address}/?{urllib.parse.urlencode(opts)}"

    # ---- clients ----
    @property
    def client(self) -> pymongo.MongoClient:
        """A shared client for self.uri (authenticated when auth is on)."""
        if self._client is None:
            self._client = self.new_client()
        return self._client

    def new_client(self, uri: Optional[str] = None, **kwargs) -> pymongo.MongoClient:
        """A new client (closed when the server stops) with bounded timeouts."""
        opts = dict(CLIENT_OPTIONS)
        opts.update(kwargs)
        c = pymongo.MongoClient(uri or self.uri, **opts)
        self._clients.append(c)
        return c

    # ---- lifecycle ----
    def command_line(self, port: int) -> list:
        cmd = [
            str(self.binary), "--handler=sqlite", f"--sqlite-url=file:{self.datadir}/",
            f"--listen-addr=127.0.0.1:{port}", f"--state-dir={self.statedir}",
            "--debug-addr=-", "--telemetry=disable", f"--repl-set-name={REPLICA_SET}",
            "--log-level=warn",
        ]
        if self.auth:
            user, password = self.auth
            # Without --test-enable-new-auth the SQLite backend does not check credentials at all.
            # --setup-username requires --setup-database.
            cmd += ["--test-enable-new-auth=true", "--setup-database=admin",
                    f"--setup-username={user}", f"--setup-password={password}"]
        return cmd + self.extra_args

    def start(self, timeout: float = START_TIMEOUT) -> "FerretDB":
        if not _is_executable(self.binary):
            raise RuntimeError(f"FerretDB is not built: no executable {self.binary} (run scripts/check)")
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.statedir.mkdir(parents=True, exist_ok=True)
        for _attempt in range(3):
            port = free_port()
            offset = self.log_size()
            with open(self.logfile, "ab") as log:
                log.write(f"=== {' '.join(self.command_line(port))}\n".encode())
                log.flush()
                self.proc = subprocess.Popen(
                    _die_with_parent(self.command_line(port)), stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT)
            self.port = port
            err = self._wait_ready(timeout)
            if err is None:
                return self
            self._kill()
            if "address already in use" not in self.log_text(offset):
                break
        raise RuntimeError(f"FerretDB {self.name} did not start: {err}\n"
                           f"--- {self.logfile} (tail) ---\n{self.log_text()[-4000:]}")

    def _wait_ready(self, timeout: float) -> Optional[str]:
        """None once the server answers (and, with auth, accepts the setup user); else why not."""
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"exited with status {self.proc.returncode}"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                time.sleep(0.05)
        else:
            return f"not listening on {self.address} after {timeout}s"
        remaining_ms = max(1000, int((deadline - time.monotonic()) * 1000))
        probe = pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=remaining_ms,
                                    connectTimeoutMS=remaining_ms, socketTimeoutMS=remaining_ms)
        try:
            probe.admin.command("ping")
            return None
        except Exception as e:  # noqa: BLE001 - any failure means "not ready"
            return f"ping on {self.uri} failed: {e}"
        finally:
            probe.close()

    def _kill(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:  # pragma: no cover - a SIGKILLed process that does not die
            pass

    def stop(self) -> None:
        """Close clients, SIGTERM, wait up to STOP_TIMEOUT, then SIGKILL.  Idempotent."""
        for c in self._clients:
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass
        self._clients.clear()
        self._client = None
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._kill()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # ---- logs ----
    def log_size(self) -> int:
        try:
            return self.logfile.stat().st_size
        except FileNotFoundError:
            return 0

    def log_text(self, offset: int = 0) -> str:
        try:
            with open(self.logfile, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def __repr__(self) -> str:
        return f"<FerretDB {self.name} {self.address} {'running' if self.running else 'stopped'}>"


def drop_all_databases(client: pymongo.MongoClient) -> None:
    """Drop every database but admin/config; empty "local" (its collections are test-made);
    in admin, drop what tests made (everything but admin.system.*, which holds the users)."""
    for name in client.list_database_names():
        if name == "admin":
            for coll in client.admin.list_collection_names():
                if not coll.startswith("system."):
                    client.admin.drop_collection(coll)
            continue
        if name in KEEP_DATABASES:
            continue
        if name == "local":
            for coll in client.local.list_collection_names():
                client.local.drop_collection(coll)
        else:
            client.drop_database(name)


# ---- fixtures ----------------------------------------------------------------

@pytest.fixture(scope="session")
def tools() -> Tools:
    t = Tools(
        bin_dir=TOOLS_BIN,
        build_dir=BUILD_DIR,
        ferretdb=TOOLS_BIN / "ferretdb",
        mongodump=TOOLS_BIN / "mongodump",
        mongorestore=TOOLS_BIN / "mongorestore",
        worker=BUILD_DIR / "src" / "worker" / "mongosnap-worker",
    )
    missing = [str(getattr(t, n)) for n in ("ferretdb", "mongodump", "mongorestore")
               if not _is_executable(getattr(t, n))]
    if missing:
        pytest.fail(f"test tools not built: {', '.join(missing)} (run scripts/check, "
                    f"or set MONGOSNAP_TOOLS_BIN)", pytrace=False)
    return t


@pytest.fixture(scope="session")
def ferretdb(tools: Tools, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerretDB]:
    server = FerretDB(tools.ferretdb, tmp_path_factory.mktemp("ferretdb-session"), name="session")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def ferretdb_factory(tools: Tools, tmp_path_factory: pytest.TempPathFactory):
    servers: list = []

    def start(name: str = "target", auth: Optional[Tuple[str, str]] = None,
              extra_args: Sequence[str] = ()) -> FerretDB:
        server = FerretDB(tools.ferretdb, tmp_path_factory.mktemp(f"ferretdb-{name}"), name=name,
                          auth=auth, extra_args=extra_args)
        servers.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in reversed(servers):
            server.stop()


@pytest.fixture
def fresh_db(ferretdb: FerretDB) -> FerretDB:
    drop_all_databases(ferretdb.client)
    return ferretdb


# ---- server logs in failure reports --------------------------------------------

_LOG_MARKS = pytest.StashKey[dict]()
_SEQ_MARK = pytest.StashKey[int]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_SEQ_MARK] = FerretDB._seq
    item.stash[_LOG_MARKS] = {s.seq: s.log_size() for s in FerretDB.instances if s.running}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.failed:
        marks = item.stash.get(_LOG_MARKS, {})
        seq = item.stash.get(_SEQ_MARK, 0)
        for s in FerretDB.instances:
            if s.seq in marks or s.seq > seq:
                text = s.log_text(marks.get(s.seq, 0))
                if len(text) > LOG_TAIL_CHARS:
                    text = "[...]\n" + text[-LOG_TAIL_CHARS:]
                report.sections.append((f"FerretDB {s.name} log ({s.logfile}), {call.when}",
                                        text or "(nothing logged during this test)"))
    return report
