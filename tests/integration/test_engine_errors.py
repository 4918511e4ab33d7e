"""Failures the worker must report clearly, with the documented exit codes: an unreachable
server (4), a refused login (4), bad arguments (2), store problems; and credentials: a password
given in --uri-file or --password-file never appears in any output, progress line, manifest
or stored file.
"""

from __future__ import annotations

import re
import socket
import time
import urllib.parse

import pytest

import helpers as h

# Characters that need percent-encoding in a URI, so both spellings are searched for.
PASSWORD = "Zq7!s3cr3t@pass/w0rd"
ENCODED = urllib.parse.quote_plus(PASSWORD)
WRONG = "Wr0ng!guess@pw"


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_secret_absent(text: str, *secrets: str, where: str = "output") -> None:
    for secret in secrets:
        for form in {secret, urllib.parse.quote_plus(secret), urllib.parse.quote(secret, safe="")}:
            assert form not in text, f"the password ({form!r}) appears in the {where}"


def all_run_text(run: h.WorkerRun) -> str:
    return run.stdout + "\n" + run.stderr + "\n" + "\n".join(run.progress_lines)


def assert_store_clean(store, *secrets):
    for rel in h.store_files(store):
        path = store / rel
        if path.is_file():
            data = path.read_bytes()
            for secret in secrets:
                for form in {secret, urllib.parse.quote_plus(secret)}:
                    assert form.encode() not in data, f"the password appears in stored file {rel}"


# ---- unreachable, refused ---------------------------------------------------------------------

def test_unreachable_server(tools, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    uri = f"mongodb://127.0.0.1:{closed_port()}/?serverSelectionTimeoutMS=2000&connectTimeoutMS=1000"
    uri_file = h.write_uri_file(tmp_path, uri)
    for args in (["snapshot", "--store", store, "--name", "x"],
                 ["restore", "--archive", "/dev/null"]):
        started = time.monotonic()
        run = h.run_worker(tools, args[0], "--uri-file", uri_file, *args[1:], progress=True, timeout=60)
        assert run.returncode == h.EXIT_UNREACHABLE, run.describe()
        assert "cannot reach" in run.stderr, run.describe()
        assert "127.0.0.1" in run.stderr
        assert time.monotonic() - started < 30
        assert run.result["status"] == "failed" and run.result["exit_code"] == h.EXIT_UNREACHABLE
    assert h.store_files(store) == []


@pytest.fixture
def auth_server(ferretdb_factory):
    server = ferretdb_factory(name="auth", auth=("admin", PASSWORD))
    h.load_simple_dataset(server.client, "secretdb", {"c": 20, "d": 3})
    return server


def test_wrong_password_in_uri(tools, auth_server, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    uri_file = h.write_uri_file(tmp_path, auth_server.uri_with("admin", WRONG))
    run = h.run_worker(tools, "snapshot", "--uri-file", uri_file, "--store", store, "--name", "x",
                       "-v", progress=True)
    assert run.returncode == h.EXIT_UNREACHABLE, run.describe()
    assert "refused the login" in run.stderr, run.describe()
    assert_secret_absent(all_run_text(run), WRONG, PASSWORD)
    assert h.store_files(store) == []


def test_wrong_password_in_password_file(tools, auth_server, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    uri_file = h.write_uri_file(tmp_path, auth_server.uri_with("admin"))
    pw_file = tmp_path / "pw"
    pw_file.write_text(WRONG + "\n")
    run = h.run_worker(tools, "restore", "--uri-file", uri_file, "--password-file", pw_file,
                       "--archive", "/dev/null", "-v", progress=True)
    assert run.returncode == h.EXIT_UNREACHABLE, run.describe()
    assert "refused the login" in run.stderr
    assert_secret_absent(all_run_text(run), WRONG, PASSWORD)


@pytest.mark.parametrize("how", ["uri-file", "password-file"])
def test_password_appears_nowhere(tools, auth_server, tmp_path, how):
    store = tmp_path / "store"
    store.mkdir()
    if how == "uri-file":
        uri_file = h.write_uri_file(tmp_path, auth_server.uri)  # admin:<encoded password>@
        assert ENCODED in uri_file.read_text()
        cred = []
    else:
        uri_file = h.write_uri_file(tmp_path, auth_server.uri_with("admin"))
        pw_file = tmp_path / "pw"
        pw_file.write_text(PASSWORD + "\n")
        cred = ["--password-file", pw_file]
    runs = [
        h.run_worker(tools, "snapshot", "--uri-file", uri_file, *cred, "--store", store, "--name", "s",
                     "-v", "--json", progress=True),
        h.run_worker(tools, "snapshot", "--uri-file", uri_file, *cred, "--store", store, "--name", "s2",
                     "--compression", "none", "-v", progress=True),
        h.run_worker(tools, "verify", "--store", store, "--snapshot", "s", "-v", progress=True),
        h.run_worker(tools, "restore", "--uri-file", uri_file, *cred, "--store", store, "--snapshot", "s",
                     "--ns-from", "secretdb.*", "--ns-to", "copydb.*", "-v", "--json", progress=True),
        # A failing run prints the URI in its message: still without the password.
        h.run_worker(tools, "snapshot", "--uri-file", uri_file, *cred, "--store", store, "--name", "s",
                     "-v", progress=True),
    ]
    for run in runs[:4]:
        h.expect_ok(run)
        assert run.progress_lines, run.describe()
    assert runs[4].returncode != h.EXIT_OK and "already exists" in runs[4].stderr
    for run in runs:
        assert_secret_absent(all_run_text(run), PASSWORD, where=f"output of {' '.join(run.args[1:2])}")
    assert h.digest(auth_server.client, ["copydb"], {"copydb": "secretdb"}) == h.digest(auth_server.client, ["secretdb"])
    manifest = h.read_manifest(store, "s")
    assert manifest["source"]["uri"].startswith("mongodb://admin@127.0.0.1:")
    assert_store_clean(store, PASSWORD)
    assert sorted(h.store_files(store)) == ["s.archive.zst", "s.manifest.json", "s2.archive",
                                            "s2.manifest.json"]


@pytest.mark.parametrize("raw_password", ["pa/ss-Secret1", "pa?ss-Secret2"])
def test_malformed_uri_password_not_leaked(tools, auth_server, tmp_path, raw_password):
    store = tmp_path / "store"
    store.mkdir()
    uri_file = h.write_uri_file(tmp_path, f"mongodb://admin:{raw_password}@{auth_server.address}/"
                                          "?replicaSet=rs0&authSource=admin")
    run = h.run_worker(tools, "snapshot", "--uri-file", uri_file, "--store", store, "--name", "x",
                       progress=True)
    assert run.returncode != h.EXIT_OK
    assert_secret_absent(all_run_text(run), raw_password)


def test_user_without_password(tools, auth_server, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    uri_file = h.write_uri_file(tmp_path, auth_server.uri_with("admin"))
    run = h.run_worker(tools, "snapshot", "--uri-file", uri_file, "--store", store, "--name", "x")
    assert run.returncode in (h.EXIT_USAGE, h.EXIT_UNREACHABLE), run.describe()
    assert "password" in run.stderr
    assert "AddressSanitizer" not in run.stderr and "SEGV" not in run.stderr


# ---- arguments ---------------------------------------------------------------------------

BAD_ARGUMENTS = [
    ([], r"no command given"),
    (["frobnicate"], r"unknown command 'frobnicate'"),
    (["snapshot", "--bogus"], r"unrecognized option"),
    (["snapshot", "{uri}", "--store", "{store}", "--compression", "lz4"], r"unknown compression 'lz4'"),
    (["snapshot", "{uri}", "--store", "{store}", "--level", "99"], r"--level takes"),
    (["snapshot", "{uri}", "--store", "{store}", "--parallel", "0"], r"--parallel takes"),
    (["snapshot", "{uri}", "--store", "{store}", "--threads", "many"], r"--threads takes"),
    (["snapshot", "{uri}"], r"needs --store"),
    (["snapshot", "--store", "{store}"], r"needs the source"),
    (["snapshot", "--uri-file", "/nonexistent/uri", "--store", "{store}"], r"cannot open /nonexistent/uri"),
    (["restore", "{uri}", "--store", "{store}"], r"exactly one of --snapshot"),
    (["restore", "{uri}", "--store", "{store}", "--snapshot", "a", "--archive", "b"], r"exactly one of --snapshot"),
    (["restore", "--archive", "x"], r"needs the target"),
    (["restore", "{uri}", "--archive", "x", "--batch-size", "0"], r"--batch-size takes"),
    (["restore", "{uri}", "--archive", "x", "--ns-include", "nodot"], r"has no '\.'"),
    (["restore", "{uri}", "--archive", "x", "--ns-from", "a.*", "--ns-to", "b.c"], r"same number of '\*'"),
    (["restore", "{uri}", "--archive", "x", "--until", "yesterday"], r"--until 'yesterday'"),
    (["restore", "{uri}", "--archive", "x", "--until", "2024-02-30T00:00:00Z"], r"--until"),
    (["verify"], r"exactly one of --snapshot"),
    (["verify", "--archive", "x", "extra"], r"unexpected argument 'extra'"),
    (["verify", "--archive", "x", "--progress-fd", "77"], r"--progress-fd 77 is not an open file"),
]


@pytest.mark.parametrize("args,message", BAD_ARGUMENTS, ids=[" ".join(a[:3]) + f"-{i}" for i, (a, _) in enumerate(BAD_ARGUMENTS)])
def test_bad_arguments(tools, tmp_path, args, message):
    store = tmp_path / "store"
    store.mkdir()
    uri_file = h.write_uri_file(tmp_path, "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500")
    expanded = []
    for a in args:
        if a == "{uri}":
            expanded += ["--uri-file", str(uri_file)]
        else:
            expanded.append(a.replace("{store}", str(store)))
    run = h.run_worker(tools, *expanded, timeout=30)
    assert run.returncode == h.EXIT_USAGE, run.describe()
    assert re.search(message, run.stderr), run.describe()
    assert h.store_files(store) == []


def test_ns_to_without_ns_from(tools, tmp_path):
    uri_file = h.write_uri_file(tmp_path, "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500")
    run = h.run_worker(tools, "restore", "--uri-file", uri_file, "--archive", "x", "--ns-to", "b.*", timeout=30)
    assert run.returncode == h.EXIT_USAGE, run.describe()
    assert "--ns-from" in run.stderr


@pytest.mark.parametrize("renames", [["--ns-from", "a.*"],
                                     ["--ns-from", "a.*", "--ns-from", "c.*", "--ns-to", "b.*"]],
                         ids=["alone", "two-from-one-to"])
def test_ns_from_without_ns_to(tools, tmp_path, renames):
    uri_file = h.write_uri_file(tmp_path, "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500")
    run = h.run_worker(tools, "restore", "--uri-file", uri_file, "--archive", "/nonexistent", *renames,
                       timeout=30)
    assert run.returncode == h.EXIT_USAGE, run.describe()
    assert "--ns-to" in run.stderr


# ---- the store ---------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["snapshot", "restore", "verify"])
def test_store_that_does_not_exist(tools, tmp_path, command):
    uri_file = h.write_uri_file(tmp_path, "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500")
    missing = tmp_path / "no" / "such" / "store"
    args = {"snapshot": ["snapshot", "--uri-file", uri_file, "--name", "x"],
            "restore": ["restore", "--uri-file", uri_file, "--snapshot", "x"],
            "verify": ["verify", "--snapshot", "x"]}[command]
    run = h.run_worker(tools, *args, "--store", missing, timeout=30)
    assert run.returncode == h.EXIT_USAGE, run.describe()
    assert f"storage directory '{missing}' does not exist" in run.stderr
    assert not missing.exists()


def test_store_that_is_a_file_or_relative(tools, tmp_path):
    uri_file = h.write_uri_file(tmp_path, "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500")
    run = h.run_worker(tools, "snapshot", "--uri-file", uri_file, "--store", uri_file, "--name", "x", timeout=30)
    assert run.returncode == h.EXIT_USAGE and "is not a directory" in run.stderr, run.describe()
    run = h.run_worker(tools, "snapshot", "--uri-file", uri_file, "--store", "relative/store", "--name", "x",
                       timeout=30)
    assert run.returncode == h.EXIT_USAGE and "relative path" in run.stderr, run.describe()


def test_snapshot_name_taken_or_invalid(tools, fresh_db, tmp_path):
    h.load_simple_dataset(fresh_db.client, "names", {"c": 10})
    store = tmp_path / "store"
    store.mkdir()
    uri_file = h.write_uri_file(tmp_path, fresh_db.uri)
    h.snapshot(tools, uri_file, store, "taken")
    before = {p: (store / p).read_bytes() for p in h.store_files(store)}
    run = h.run_worker(tools, "snapshot", "--uri-file", uri_file, "--store", store, "--name", "taken")
    assert run.returncode not in (h.EXIT_OK, h.EXIT_USAGE), run.describe()
    assert "already exists" in run.stderr
    assert {p: (store / p).read_bytes() for p in h.store_files(store)} == before
    run = h.run_worker(tools, "snapshot", "--uri-file", uri_file, "--store", store, "--name", "../escape")
    assert run.returncode != h.EXIT_OK and "not a valid snapshot location" in run.stderr, run.describe()
    assert not (tmp_path / "escape.archive.zst").exists()
    assert h.store_files(store) == sorted(before)
