"""Credentials have scopes: no D-Bus caller can make the agent send a secret where the
configuration did not send it.

The adversarial hour's fourth finding: StartRestore's credential option took any credential
name and the target URI could say authMechanism=PLAIN, so a member of group mongosnap captured
the production backup password and the S3 secret key with a few lines of Python acting as the
server.  Here that server is fake_mongo.FakeMongo (it records every byte it receives), and every
way of asking for a secret is tried over D-Bus: the policies' source password, the store's keys,
an encryption key, a credential no [Restore] Credentials= lists, key_credential naming a
password, and the mechanisms that send a password in clear or present the machine's own
credentials.  Each is refused before any worker starts, so the server sees no connection at
all, and no restore is recorded.  A control case (an allowed credential, SCRAM) shows that the
server does receive what the agent sends, and that it is not the password.

The other half (only root may change Source=, Credential=, Store= and Key= over D-Bus) needs
users in group mongosnap and is tested in the booted systemd: test_systemd_package.py.
"""

from __future__ import annotations

import signal
import time

import pytest

from agent_fixtures import *  # noqa: F401,F403
from agent_fixtures import BusError, MANAGER_IFACE, MANAGER_PATH, RESTORE_IFACE, decode, \
    start_restore
from fake_mongo import FakeMongo
from test_agent_restore import completed_snapshot, list_restores, seed, wait_restore

SRC_PW = "Src-Pw-only-for-db1-Q7"
TARGET_PW = "Restore-Target-Pw-K3"
S3_SECRET = "S3-secret-never-leaves-W9"
ENC_KEY = "ab" * 32


@pytest.fixture
def scoped(agent, fresh_db):
    creds = agent.credentials
    for name, value in (("src-pw", SRC_PW), ("restore-target", TARGET_PW),
                        ("unlisted", "Unlisted-Pw-Z1"), ("s3-secret-access-key", S3_SECRET),
                        ("enc-key", ENC_KEY)):
        (creds / name).write_text(value)
        (creds / name).chmod(0o600)
    seed(fresh_db.client)
    agent.write_policy("p", fresh_db.uri)
    # A policy that puts src-pw and enc-key in use (never snapshotted here).
    (agent.policy_dir / "prod.conf").write_text(
        "[Policy]\nSource=mongodb://backup@db1.invalid:27017/\nCredential=src-pw\n\n"
        "[Encryption]\nKey=enc-key\n")
    agent.start()
    sid = decode(completed_snapshot(agent, "p"))
    server = FakeMongo()
    yield agent, sid, server
    server.close()


def refused(agent, sid, target, options, needle):
    with pytest.raises(BusError) as ei:
        start_restore(agent, sid, target, options)
    assert ei.value.name == "io.mongosnap1.Error.AccessDenied", (options, ei.value)
    assert needle in ei.value.message, (options, ei.value.message)
    return ei.value.message


CASES = [
    # (URI options, StartRestore options, what the message says)
    ("", "{'credential': <'src-pw'>}", "source password"),
    # the report's capture: the source password, in clear, to the caller's server
    ("?authMechanism=PLAIN", "{'credential': <'src-pw'>}", "clear text"),
    ("", "{'credential': <'s3-secret-access-key'>}", "store's key"),
    ("", "{'credential': <'enc-key'>}", "encryption key"),
    ("", "{'credential': <'unlisted'>}", "[Restore] Credentials="),
    ("", "{'key_credential': <'src-pw'>}", "not an encryption key"),
    ("", "{'key_credential': <'restore-target'>}", "not an encryption key"),
    ("", "{'key_credential': <'unlisted'>}", "KeyCredentials="),
    ("?authMechanism=PLAIN", "{'credential': <'restore-target'>}", "clear text"),
    ("?authMechanism=PLAIN&tls=true&tlsInsecure=true", "{'credential': <'restore-target'>}",
     "not checked"),
    ("?authMechanism=MONGODB-AWS", "@a{sv} {}", "MONGODB-AWS"),
    ("?authMechanism=MONGODB-X509", "@a{sv} {}", "MONGODB-X509"),
    ("?authMechanism=GSSAPI", "@a{sv} {}", "GSSAPI"),
    ("?tls=true&tlsCertificateKeyFile=/etc/mongosnap/client.pem", "@a{sv} {}",
     "tlsCertificateKeyFile"),
]


@pytest.mark.parametrize("uri_options,options,needle", CASES)
def test_each_way_to_a_secret_is_refused_before_anything_is_sent(scoped, uri_options, options,
                                                                  needle):
    agent, sid, server = scoped
    target = f"mongodb://admin@{server.address}/{uri_options}"
    message = refused(agent, sid, target, options, needle)
    for secret in (SRC_PW, TARGET_PW, S3_SECRET, ENC_KEY):
        assert secret not in message
    time.sleep(0.3)
    assert server.connections == 0, "a connection reached the caller's server"
    assert bytes(server.raw) == b""
    assert list_restores(agent) == []


def test_an_allowed_credential_goes_only_by_scram(scoped):
    """The control: the server does receive what the agent sends (so the cases above are not
    vacuous), and a listed credential over SCRAM never carries the password itself."""
    agent, sid, server = scoped
    path = start_restore(agent, sid, f"mongodb://admin@{server.address}/",
                         "{'credential': <'restore-target'>}")
    assert wait_restore(agent, path) == "failed"
    assert server.connections >= 1
    names = [n.lower() for n in server.command_names()]
    assert "saslstart" in names, names
    for secret in (TARGET_PW, SRC_PW, S3_SECRET):
        assert secret.encode() not in bytes(server.raw)
    error = agent.prop(path, RESTORE_IFACE, "Error")
    assert TARGET_PW not in error


@pytest.mark.parametrize("restore_section,needle", [
    ("Credentials=s3-secret-access-key", "store's key"),
    ("KeyCredentials=s3-access-key-id", "store's key"),
    ("Credentials=bad/name", "not a credential name"),
])
def test_restore_lists_cannot_name_the_store_keys(agent, restore_section, needle):
    text = agent.config.read_text().replace("Credentials=missing-cred restore-target",
                                            restore_section)
    agent.config.write_text(text)
    agent.start(wait_ready=False)
    code = agent.proc.wait(timeout=30)
    assert code != 0
    assert needle in agent.log_text(), agent.log_text()[-2000:]


def test_cluster_password_is_never_a_restore_credential(agent):
    text = agent.config.read_text() + "\n[Cluster]\nURI=mongodb://agent@127.0.0.1:9/\n" \
                                      "Credential=cluster-pw\n"
    agent.config.write_text(text.replace("Credentials=missing-cred restore-target",
                                         "Credentials=cluster-pw"))
    agent.start(wait_ready=False)
    assert agent.proc.wait(timeout=30) != 0
    assert "usable for one purpose only" in agent.log_text(), agent.log_text()[-2000:]


def test_reload_applies_the_restore_section_and_keeps_a_broken_one_out(scoped):
    """systemctl reload (SIGHUP) takes [Restore] at once: a credential listed afterwards may be
    named, one removed may not; a configuration that does not parse changes nothing."""
    agent, sid, server = scoped
    target = f"mongodb://admin@{server.address}/"
    refused(agent, sid, target, "{'credential': <'unlisted'>}", "Credentials=")
    original = agent.config.read_text()
    agent.config.write_text(original.replace("Credentials=missing-cred restore-target",
                                             "Credentials=missing-cred unlisted"))
    agent.proc.send_signal(signal.SIGHUP)
    agent.wait_log("[Restore] reloaded: 2 restore credential(s)")
    path = start_restore(agent, sid, target, "{'credential': <'unlisted'>}")
    assert wait_restore(agent, path) == "failed"  # the fake server refuses; it was allowed
    refused(agent, sid, target, "{'credential': <'restore-target'>}", "Credentials=")

    # A broken file: the lists stay as they were, and the log says why.
    agent.config.write_text(original.replace("Credentials=missing-cred restore-target",
                                             "Credentials=bad/name"))
    agent.proc.send_signal(signal.SIGHUP)
    agent.wait_log("reloading the configuration failed, it stays as it was")
    path = start_restore(agent, sid, target, "{'credential': <'unlisted'>}")
    assert wait_restore(agent, path) == "failed"
    for secret in (TARGET_PW, SRC_PW, S3_SECRET):
        assert secret.encode() not in bytes(server.raw)
