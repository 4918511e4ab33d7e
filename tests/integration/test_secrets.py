"""Secrets sweep: run mongosnapd with known, distinctive secret values (a MongoDB password given
as a credential, a wrong one, S3 keys, an encryption key, a restore target's password) through
snapshot, failed snapshot, verify, restore, delete, GetLog, every object's properties,
introspection, GetManagedObjects and mongosnapctl; then search everything an observer could read
for them: the agent's output, every D-Bus reply, ctl output, every file of the state directory
(sqlite catalog, WAL), the stored manifests, the policy files, and the command lines and
environments of the workers (sampled from /proc while they ran). Also checks file modes."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Dict, List, Set

import pytest

from agent_fixtures import *  # noqa: F401,F403
from agent_fixtures import BUS_NAME, BusError, MANAGER_IFACE, MANAGER_PATH, POLICY_IFACE, \
    SNAPSHOT_IFACE
from conftest import BUILD_DIR
from helpers import data_digest
from minio_fixtures import *  # noqa: F401,F403
from test_agent_restore import RESTORE_IFACE, FINAL_SNAPSHOT, decode, gdbus, seed, \
    start_restore, wait_restore

MONGO_USER = "backup"
MONGO_PW = "MgPw-Kq7vX93-Lzt"
WRONG_PW = "WrongPw-Hb42-Pqe"
TARGET_PW = "TgPw-Rm58-Yc0aW"
ENC_KEY = "5ec4e7a1d2c3b4a5968778695a4b3c2d1e0f0e1d2c3b4a5968778695ab0c1d2e"
PREFIX = "sweep"
CTL = BUILD_DIR / "src" / "ctl" / "mongosnapctl"


class ProcSampler:
    """Samples the command line and environment of every descendant of a pid, every few ms."""

    def __init__(self, root_pid: int):
        self.root = root_pid
        self.samples: Dict[int, dict] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "ProcSampler":
        self._thread.start()
        return self

    def _children(self) -> Set[int]:
        parents: Dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                text = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(text.rsplit(")", 1)[1].split()[1])
        found, frontier = set(), {self.root}
        while frontier:
            frontier = {p for p, pp in parents.items() if pp in frontier and p not in found}
            found |= frontier
        return found

    def _run(self) -> None:
        deadline = time.monotonic() + 600
        while not self._stop.is_set() and time.monotonic() < deadline:
            for pid in self._children():
                if b"mongosnap-worker" in self.samples.get(pid, {}).get("cmdline", b""):
                    continue
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                    environ = Path(f"/proc/{pid}/environ").read_bytes()
                except OSError:
                    continue
                if not cmdline:
                    continue
                self.samples[pid] = {"cmdline": cmdline, "environ": environ}
            time.sleep(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def workers(self) -> List[dict]:
        return [s for s in self.samples.values() if b"mongosnap-worker" in s["cmdline"]]


def busctl_text(agent, *args: str) -> str:
    cp = agent.busctl(*args, check=False)
    return cp.stdout + cp.stderr


def sample_worker(agent, sampler: ProcSampler, before: int, verb: bytes,
                  timeout: float = 20) -> dict:
    """Wait until the sampler has seen a worker child of the agent running `verb` (the task is
    held up) beyond the `before` it had seen when the task was asked for (counted before asking:
    the sampler may see the new worker before the call that started it returns). Other workers
    (the start-up check of the stores, `scan`) may come and go meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = [w for w in sampler.workers()[before:] if w["cmdline"].split(b"\0")[1:2] == [verb]]
        if new:
            return new[-1]
        time.sleep(0.02)
    raise AssertionError(f"no {verb.decode()} worker process seen")


def test_secrets_never_leak(agent, ferretdb_factory, minio, s3_bucket, tmp_path):
    src = ferretdb_factory("secret-src", auth=(MONGO_USER, MONGO_PW))
    seed(src.client)
    target = ferretdb_factory("secret-target", auth=("admin", TARGET_PW))

    creds = agent.credentials
    (creds / "mongo-pw").write_text(MONGO_PW)
    (creds / "wrong-pw").write_text(WRONG_PW)
    (creds / "s3-access-key-id").write_text(minio.access_key)
    (creds / "s3-secret-access-key").write_text(minio.secret_key)
    (creds / "enc-key").write_text(ENC_KEY + "\n")
    for f in creds.iterdir():
        f.chmod(0o600)

    source = src.uri_with(MONGO_USER)  # user, no password: the password is the credential
    assert MONGO_PW not in source
    (agent.policy_dir / "enc.conf").write_text(
        f"[Policy]\nSource={source}\nCredential=mongo-pw\n"
        f"Store={minio.location(s3_bucket, PREFIX)}\n\n[Encryption]\nKey=enc-key\n")
    (agent.policy_dir / "bad.conf").write_text(
        f"[Policy]\nSource={source}\nCredential=wrong-pw\n")
    # As under mongosnapd.service (UMask=0077); test_catalog_mode_under_default_umask covers 022.
    old_umask = os.umask(0o077)
    try:
        agent.start()
    finally:
        os.umask(old_umask)
    sampler = ProcSampler(agent.proc.pid).start()
    replies: List[str] = []

    def call(path, iface, method, sig="", *args):
        out = agent.call(path, iface, method, sig, *args)
        replies.append(json.dumps(out))
        return out

    def g(path, iface, method, *args):
        out = gdbus(agent, path, iface, method, *args)
        replies.append(out)
        return out

    # ---- a snapshot, held up (source paused) so its worker is sampled while it runs ----
    os.kill(src.proc.pid, signal.SIGSTOP)
    try:
        seen = len(sampler.workers())
        snap = agent.take_snapshot("enc")
        worker = sample_worker(agent, sampler, seen, b"snapshot")
    finally:
        os.kill(src.proc.pid, signal.SIGCONT)
    assert b"--password-file" in worker["cmdline"] and b"--key-file" in worker["cmdline"], \
        worker["cmdline"]
    assert agent.wait_snapshot_state(snap, FINAL_SNAPSHOT) == "completed", \
        agent.prop(snap, SNAPSHOT_IFACE, "Error")
    sid = decode(snap)

    # ---- a failing snapshot: the wrong password ----
    bad = agent.take_snapshot("bad")
    assert agent.wait_snapshot_state(bad, FINAL_SNAPSHOT) == "failed"
    bad_error = agent.prop(bad, SNAPSHOT_IFACE, "Error")
    replies.append(bad_error)
    assert bad_error, "a failed snapshot has an error message"

    # ---- verify (from S3, decrypting) ----
    g(snap, SNAPSHOT_IFACE, "Verify")
    agent.wait_for(lambda: agent.prop(snap, SNAPSHOT_IFACE, "VerifyState") in ("passed", "failed"),
                   "verification")
    assert agent.prop(snap, SNAPSHOT_IFACE, "VerifyState") == "passed", \
        agent.prop(snap, SNAPSHOT_IFACE, "VerifyError")

    # ---- restore into a target whose URI carries a password; the target held up too ----
    os.kill(target.proc.pid, signal.SIGSTOP)
    try:
        seen = len(sampler.workers())
        rpath = start_restore(agent, sid, target.uri,
                              "{'ns_include': <['shop.*']>, 'drop': <true>}")
        worker = sample_worker(agent, sampler, seen, b"restore")
    finally:
        os.kill(target.proc.pid, signal.SIGCONT)
    assert b"restore" in worker["cmdline"]
    assert wait_restore(agent, rpath) == "completed", agent.prop(rpath, RESTORE_IFACE, "Error")
    assert data_digest(target.client, ["shop"]) == data_digest(src.client, ["shop"])
    # A restore that fails (a wrong target password in the URI) must not echo it either.
    bad_target = target.uri_with("admin", WRONG_PW + "-t")
    rbad = start_restore(agent, sid, bad_target)
    assert wait_restore(agent, rbad) == "failed"
    replies.append(agent.prop(rbad, RESTORE_IFACE, "Error"))

    # ---- policy files written by the agent: CreatePolicy and Edit ----
    g(MANAGER_PATH, MANAGER_IFACE, "CreatePolicy", "made",
      f"{{'Source': '{source}', 'Credential': 'mongo-pw', 'KeepLast': '3'}}")
    call(agent.policy_path("enc"), POLICY_IFACE, "Edit", "a{ss}", 1, "KeepLast", "5")

    # ---- a second snapshot, then Delete of the first (an S3 removal by a worker) ----
    snap2 = agent.take_snapshot("enc")
    assert agent.wait_snapshot_state(snap2, FINAL_SNAPSHOT) == "completed"
    manifests = {k: minio.client.get_object(Bucket=s3_bucket, Key=k)["Body"].read()
                 for k in minio.keys(s3_bucket) if k.endswith(".manifest.json")}
    assert len(manifests) == 2, manifests.keys()
    g(snap, SNAPSHOT_IFACE, "Delete")
    agent.wait_for(lambda: not [k for k in minio.keys(s3_bucket) if sid in k], "objects removed",
                   timeout=30)

    # ---- everything readable on the bus ----
    for match in ("MONGOSNAP_POLICY=enc", f"MONGOSNAP_TASK={sid}"):
        try:
            call(MANAGER_PATH, MANAGER_IFACE, "GetLog", "ssu", match, "", 0)
        except BusError as e:  # no journald here: an error, which is searched as well
            replies.append(str(e))
    call(MANAGER_PATH, MANAGER_IFACE, "ListPolicies")
    call(MANAGER_PATH, MANAGER_IFACE, "ListSnapshots", "s", "")
    call(MANAGER_PATH, MANAGER_IFACE, "ListRestores")
    call(MANAGER_PATH, MANAGER_IFACE, "Update")
    tree = busctl_text(agent, "tree", "--list", BUS_NAME)
    replies.append(tree)
    paths = [p for p in tree.split() if p.startswith("/")]
    assert len([p for p in paths if "/snapshot/" in p]) >= 3, paths
    assert len([p for p in paths if "/restore/" in p]) >= 2, paths
    for path in paths:
        replies.append(busctl_text(agent, "introspect", BUS_NAME, path))
        cp = agent.busctl("--json=short", "call", BUS_NAME, path,
                          "org.freedesktop.DBus.Properties", "GetAll", "s", "", check=False)
        replies.append(cp.stdout + cp.stderr)
    replies.append(busctl_text(agent, "--json=short", "call", BUS_NAME, "/",
                               "org.freedesktop.DBus.ObjectManager", "GetManagedObjects"))
    replies.append(busctl_text(agent, "--json=short", "call", BUS_NAME, MANAGER_PATH,
                               "org.freedesktop.DBus.ObjectManager", "GetManagedObjects"))
    assert sum("DownloadAddress" in r for r in replies) >= 2, "properties were read"

    # ---- mongosnapctl ----
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
    ctl_out = []
    for args in (["list-policies"], ["list-snapshots"], ["list-restores"], ["status"],
                 ["status", "enc"], ["status", "bad"], ["log", "enc"]):
        for json_flag in ([], ["--json"]):
            cp = subprocess.run([str(CTL), f"--address={agent.bus.address}", *json_flag, *args],
                                capture_output=True, text=True, timeout=30, env=env,
                                stdin=subprocess.DEVNULL)
            ctl_out.append(cp.stdout + cp.stderr)
    assert any(sid in o for o in ctl_out)

    # The state directory while the agent runs (the WAL and shm files exist only then).
    running_state = {f"running state file {p}": p.read_bytes()
                     for p in agent.state_dir.rglob("*") if p.is_file()}
    agent.stop()
    sampler.stop()

    # ---- the sweep ----
    secrets = {"mongo password": MONGO_PW, "wrong password": WRONG_PW,
               "target password": TARGET_PW, "wrong target password": WRONG_PW + "-t",
               "S3 secret key": minio.secret_key, "S3 key id": minio.access_key,
               "encryption key": ENC_KEY, "encryption key (upper)": ENC_KEY.upper()}
    raw_key = bytes.fromhex(ENC_KEY)

    def without_presigned(text: str) -> str:
        # A SigV4 presigned URL carries the key id by design (X-Amz-Credential=AKID/date/...):
        # the download address is meant to be handed out. Nothing else may hold it.
        return re.sub(r"X-Amz-Credential=[^&\s\"']*", "X-Amz-Credential=<cut>", text)

    places: Dict[str, bytes] = {"agent log": agent.log_text().encode()}
    places.update({f"D-Bus reply {i}": without_presigned(r).encode()
                   for i, r in enumerate(replies)})
    places.update({f"ctl output {i}": without_presigned(o).encode()
                   for i, o in enumerate(ctl_out)})
    state_files = [p for p in agent.state_dir.rglob("*") if p.is_file()]
    assert any(p.name == "mongosnap.db" for p in state_files), state_files
    places.update({f"state file {p}": p.read_bytes() for p in state_files})
    places.update(running_state)
    places.update({f"manifest {k}": v for k, v in manifests.items()})
    places.update({f"policy file {p}": p.read_bytes() for p in agent.policy_dir.iterdir()})
    workers = sampler.workers()
    assert len(workers) >= 5, f"only {len(workers)} workers sampled"
    for i, w in enumerate(workers):
        places[f"worker {i} cmdline {w['cmdline']!r}"] = w["cmdline"]
        places[f"worker {i} environ"] = w["environ"]
    assert any(b"MONGOSNAP_" in p or b"PATH=" in p for k, p in places.items()
               if k.endswith("environ")), "environments were read"

    leaks = [f"{what} in {where}" for where, data in places.items()
             for what, secret in secrets.items() if secret.encode() in data]
    leaks += [f"raw encryption key in {where}" for where, data in places.items()
              if raw_key in data]
    print(f"secrets sweep: {len(secrets) + 1} secret forms x {len(places)} places "
          f"({len(replies)} D-Bus replies, {len(ctl_out)} ctl outputs, {len(state_files)} state "
          f"files + {len(running_state)} while running: "
          f"{sorted(Path(k.split()[-1]).name for k in running_state)}, {len(manifests)} "
          f"manifests, {len(workers)} workers' cmdline+environ, {len(paths)} bus objects)")
    assert not leaks, "\n".join(leaks)
    # The redacted forms are still there (the sweep looked at the right things).
    assert any(f"{target.port}".encode() in d for k, d in places.items()
               if k.startswith("state file")), "the restore's redacted target is in the catalog"

    # ---- modes: state directory 0700, catalog files 0600, policy files 0640 or tighter ----
    modes = {str(p): stat.S_IMODE(p.stat().st_mode) for p in [agent.state_dir, *state_files]}
    bad_modes = [f"{p}: {oct(m)}" for p, m in modes.items()
                 if (m & 0o077 if p == str(agent.state_dir) else m & 0o177)]
    policy_modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in agent.policy_dir.iterdir()
                    if p.name in ("made.conf", "enc.conf")}
    bad_modes += [f"policy {n}: {oct(m)}" for n, m in policy_modes.items() if m & 0o137]
    assert not bad_modes, f"loose modes: {bad_modes}"


def test_catalog_mode_under_default_umask(agent, fresh_db):
    """mongosnapd run by hand under umask 022, with a state directory left 0755 by someone:
    the directory becomes 0700 and the catalog (with its -wal/-shm files) 0600 all the same."""
    seed(fresh_db.client)
    agent.write_policy("p", fresh_db.uri)
    agent.state_dir.mkdir(mode=0o755, exist_ok=True)
    os.chmod(agent.state_dir, 0o755)
    old_umask = os.umask(0o022)
    try:
        agent.start()
    finally:
        os.umask(old_umask)
    path = agent.take_snapshot("p")
    assert agent.wait_snapshot_state(path, FINAL_SNAPSHOT) == "completed"
    running = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in agent.state_dir.iterdir()
               if p.is_file()}
    assert "mongosnap.db-wal" in running, running  # WAL files exist while it runs
    assert all(m in ("0o600", "0o400") for m in running.values()), running
    agent.stop()
    assert stat.S_IMODE(agent.state_dir.stat().st_mode) == 0o700
    files = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in agent.state_dir.iterdir()
             if p.is_file()}
    assert "mongosnap.db" in files, files
    assert all(m in ("0o600", "0o400") for m in files.values()), files
