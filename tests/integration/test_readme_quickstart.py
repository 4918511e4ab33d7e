"""The README's quick start, run as written: the block after the `<!-- quickstart` marker in
README.md is split into its commands (comments dropped, backslash continuations joined) and
each runs as root with `bash -c` in a systemd booted in private namespaces (systemd_boot.py),
on a machine prepared as the README describes it: the .deb from scripts/build-deb in /tmp/deb,
FerretDB with SCRAM users `backup` and `restore` on 127.0.0.1:27017, MinIO with a bucket
`backups` on 127.0.0.1:9000, all inside the namespace's own network.

Nothing runs on a terminal: every command has a pipe or nothing as standard input (the
secrets go to `set-credential` on its standard input, as `... | mongosnapctl set-credential`
would), so no step may need a tty. The only thing the test changes in a command is the example
task name (`nightly-20261206T020000Z`), replaced by the one `snapshot --wait` printed.

Each command must exit 0; then what the quick start promises is checked: the copy holds the
source's documents, the snapshot is listed, shown with its download address and verified, the
Event Log and the journal tell the story with the catalog's text, the documentation is
installed, and no secret appears in any output or in the journal.
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
from pathlib import Path
from typing import Dict, List

import pytest

from conftest import REPO_ROOT, TOOLS_BIN
from systemd_boot import BootedSystemd, booted_systemd, start_ferretdb_inside  # noqa: F401
from test_systemd_package import deb_package  # noqa: F401  (built once per session)

MARKER = "<!-- quickstart"
EXAMPLE_TASK = re.compile(r"nightly-\d{8}T\d{6}Z")
COMMAND_TIMEOUT = 180.0
SECRETS = {
    "mongo-backup": "Backup-Pw-" + secrets.token_hex(8),
    "mongo-restore": "Restore-Pw-" + secrets.token_hex(8),
    "s3-access-key-id": "quickstart" + secrets.token_hex(4),
    "s3-secret-access-key": "S3-Secret-" + secrets.token_hex(12),
}
ORDERS = 300
CUSTOMERS = 40


def quickstart_commands(readme: str) -> List[str]:
    """The commands of the first ```sh block after the marker."""
    at = readme.index(MARKER)
    block = re.search(r"```sh\n(.*?)```", readme[at:], re.S)
    assert block, "no ```sh block after the quickstart marker in README.md"
    commands, pending = [], ""
    for raw in block.group(1).splitlines():
        line = raw.rstrip()
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        commands.append((pending + line.strip()).strip())
        pending = ""
    assert not pending, f"a continuation line ends the block: {pending!r}"
    return commands


def credential_of(command: str):
    """The NAME of a `mongosnapctl set-credential NAME` command, else None."""
    words = shlex.split(command, comments=True)
    if words[:2] == ["mongosnapctl", "set-credential"] and len(words) == 3:
        return words[2]
    return None


def start_minio_inside(sd: BootedSystemd) -> None:
    binary = TOOLS_BIN / "minio"
    if not binary.is_file():
        pytest.fail(f"not built: {binary} (run scripts/check)", pytrace=False)
    sd.write_file("/etc/minio.env",
                  f"MINIO_ROOT_USER={SECRETS['s3-access-key-id']}\n"
                  f"MINIO_ROOT_PASSWORD={SECRETS['s3-secret-access-key']}\n"
                  "MINIO_BROWSER=off\nMINIO_UPDATE=off\n", mode=0o600)
    sd.start_transient("minio", str(binary), "server", "/var/lib/minio", "--quiet",
                       "--address", "127.0.0.1:9000", "--console-address", "127.0.0.1:9001",
                       properties=["StateDirectory=minio", "EnvironmentFile=/etc/minio.env",
                                   "Description=MinIO for the quick start"])
    sd.wait_for_tcp(9000)
    sd.run_python(
        "import os, time, boto3, botocore.config\n"
        "s3 = boto3.client('s3', endpoint_url='http://127.0.0.1:9000',"
        " aws_access_key_id=os.environ['K'], aws_secret_access_key=os.environ['S'],"
        " region_name='us-east-1', config=botocore.config.Config(s3={'addressing_style': 'path'}))\n"
        "for i in range(100):\n"
        "    try:\n"
        "        s3.create_bucket(Bucket='backups'); break\n"
        "    except Exception:\n"
        "        time.sleep(0.2)\n"
        "else:\n"
        "    raise SystemExit('MinIO never took the bucket')\n",
        env={"K": SECRETS["s3-access-key-id"], "S": SECRETS["s3-secret-access-key"]})


DIGEST = """
import hashlib, json, os, bson, pymongo
c = pymongo.MongoClient(os.environ['U'], password=os.environ['P'], serverSelectionTimeoutMS=10000)
out = {}
for db in ('shop', 'shop_copy'):
    for coll in sorted(c[db].list_collection_names()):
        docs = sorted(bson.encode(d) for d in c[db][coll].find({}))
        out[f'{db}.{coll}'] = [len(docs), hashlib.sha256(b''.join(docs)).hexdigest()]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def host(booted_systemd: BootedSystemd, deb_package: Path) -> BootedSystemd:
    """The machine the README speaks of, before its first command."""
    sd = booted_systemd
    uri = start_ferretdb_inside(sd, TOOLS_BIN / "ferretdb",
                                auth=("backup", SECRETS["mongo-backup"]))
    sd.run_python(
        "import os, pymongo\n"
        "c = pymongo.MongoClient(os.environ['U'], password=os.environ['P'],"
        " serverSelectionTimeoutMS=10000)\n"
        "c.admin.command('createUser', 'restore', pwd=os.environ['R'], roles=[])\n"
        f"c.shop.orders.insert_many([{{'_id': i, 'sku': i % 17, 'pad': 'o' * 80}}"
        f" for i in range({ORDERS})])\n"
        f"c.shop.customers.insert_many([{{'_id': i, 'name': f'c{{i}}'}} for i in range({CUSTOMERS})])\n",
        env={"U": uri, "P": SECRETS["mongo-backup"], "R": SECRETS["mongo-restore"]})
    start_minio_inside(sd)
    # As on a machine without Docker's policy-rc.d (which keeps services from starting) and
    # without man-db's index rebuild (slow, irrelevant here): see test_systemd_package.py.
    sd.run("rm", "-f", "/usr/sbin/policy-rc.d", "/var/lib/man-db/auto-update")
    sd.run("mkdir", "-p", "/tmp/deb")
    sd.copy_in(deb_package, f"/tmp/deb/{deb_package.name}", mode=0o644)
    sd.uri = uri
    return sd


def test_the_readme_quick_start_works_as_written(host: BootedSystemd):
    sd = host
    commands = quickstart_commands((REPO_ROOT / "README.md").read_text())
    assert len(commands) >= 15, commands
    outputs: Dict[str, str] = {}
    task = None
    for command in commands:
        name = credential_of(command)
        if name is not None:
            assert name in SECRETS, f"the README sets a credential the test does not know: {name}"
        if task:
            command = EXAMPLE_TASK.sub(task, command)
        else:
            assert not EXAMPLE_TASK.search(command), f"a task name before any snapshot: {command}"
        cp = sd.run("bash", "-c", command, check=False, timeout=COMMAND_TIMEOUT,
                    input=SECRETS[name] + "\n" if name else None,
                    env={"DEBIAN_FRONTEND": "noninteractive"})
        text = cp.stdout + cp.stderr
        assert cp.returncode == 0, (f"README command failed (exit {cp.returncode}): {command}\n"
                                    f"{text[-4000:]}\n"
                                    f"{sd.journalctl('-u', 'mongosnapd', '-n', '60', check=False).stdout}")
        outputs[command] = text
        if command.startswith("mongosnapctl snapshot nightly --wait"):
            m = re.match(r"(nightly-\d{8}T\d{6}Z): completed", cp.stdout)
            assert m, cp.stdout
            task = m.group(1)
    assert task, "the quick start takes no snapshot"

    def output_of(prefix: str) -> str:
        hits = [t for c, t in outputs.items() if c.startswith(prefix)]
        assert hits, f"no README command starts with {prefix!r}"
        return hits[0]

    # The policy is there, with its next run; the timer is in systemd's list.
    assert re.search(r"^nightly\s+active\s", output_of("mongosnapctl list-policies"), re.M)
    assert "mongosnap-snapshot@nightly.timer" in output_of("systemctl list-timers")
    # The snapshot: listed, shown whole (with its download address), verified.
    assert re.search(rf"^{task}\s+nightly\s+\S+\s+completed", output_of("mongosnapctl list-snapshots"),
                     re.M), output_of("mongosnapctl list-snapshots")
    shown = output_of(f"mongosnapctl show {task}")
    assert "http://127.0.0.1:9000/backups/" in shown, shown
    assert "journalctl MONGOSNAP_TASK=" + task in shown, shown
    assert "passed" in output_of(f"mongosnapctl verify {task}")
    # The copy holds what the source held, document for document.
    got = json.loads(sd.run_python(DIGEST, env={"U": sd.uri, "P": SECRETS["mongo-backup"]}).stdout)
    for coll in ("orders", "customers"):
        assert got[f"shop_copy.{coll}"] == got[f"shop.{coll}"], got
    assert got["shop.orders"][0] == ORDERS and got["shop.customers"][0] == CUSTOMERS
    # The Event Log through the agent, and the journal with the catalog's explanations.
    log = output_of("mongosnapctl log nightly")
    assert re.search(rf"snapshot {task} completed", log), log
    journal = output_of("journalctl MONGOSNAP_POLICY=nightly")
    assert f"snapshot {task} completed" in journal and "\u2591\u2591 " in journal, journal[-3000:]
    assert "PolicyErrors: none" in output_of("mongosnapctl status")

    # The documentation the README points to is installed.
    docs = sd.run("ls", "/usr/share/doc/mongosnap").stdout.split()
    for name in ("README.md", "dbus-api.md", "architecture.md", "reliability.md"):
        assert name in docs or name + ".gz" in docs, docs
    for page in ("mongosnapctl.1", "mongosnap.conf.5", "mongosnapd.8"):
        section = page.rsplit(".", 1)[1]
        assert sd.exists(f"/usr/share/man/man{section}/{page}.gz"), page

    # No secret anywhere: not in any command's output, not in the journal.
    everything = "\n".join(outputs.values()) + sd.journalctl("-o", "verbose", check=False).stdout
    for name, secret in SECRETS.items():
        if name == "s3-access-key-id":
            # An identifier, not a secret, and part of every presigned URL (X-Amz-Credential):
            # it may show there, for root, and nowhere else.
            rest = everything.replace(f"X-Amz-Credential={secret}%2F", "X-Amz-Credential=ID%2F")
            assert secret not in rest, f"the access key id shows outside a download address"
        else:
            assert secret not in everything, f"the secret of {name} shows"
