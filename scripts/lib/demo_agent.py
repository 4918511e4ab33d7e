"""The agent part of scripts/demo: mongosnap as an operator meets it.

    python3 scripts/lib/demo_agent.py PATH/mongosnap_VERSION_ARCH.deb

Boots a systemd in private namespaces (tests/integration/systemd_boot.py: an overlay over this
machine's root, its own network, PID 1, journal and system bus; nothing of it reaches the
host), puts a MongoDB-compatible server (FerretDB, SCRAM on) with a sample shop and an S3 store
(MinIO) beside it, and then runs the operator's commands, each printed before it runs: install
the .deb, store the secrets, create a policy whose timer fires within seconds, watch the timer
take the snapshot, list and show it, restore it into a copy, compare, read the Event Log
through mongosnapctl and journalctl. Ends by checking the host was not changed.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import secrets
import shlex
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "scripts" / "lib"))

from systemd_boot import BootedSystemd, boot_unavailable_reason, start_ferretdb_inside  # noqa: E402

TOOLS = Path(os.environ.get("MONGOSNAP_TOOLS_BIN") or Path.home() / ".cache" / "mongosnap-tools" / "bin")
BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")
SECRETS = {
    "mongo-backup": "Demo-Backup-" + secrets.token_hex(6),
    "mongo-restore": "Demo-Restore-" + secrets.token_hex(6),
    "s3-access-key-id": "demo" + secrets.token_hex(4),
    "s3-secret-access-key": "Demo-S3-" + secrets.token_hex(10),
}
# How far ahead the policy's schedule is set: install, secrets and policy take a few seconds.
SCHEDULE_AHEAD_S = 20
TIMER_WAIT_S = 180


def step(text: str) -> None:
    print(f"\n{BOLD}== {text}{RESET}", flush=True)


def note(text: str) -> None:
    print(f"{DIM}{text}{RESET}", flush=True)


def op(sd: BootedSystemd, command: str, stdin: str = None, shown: str = None,
       timeout: float = 300, tail: int = 0) -> str:
    """Run an operator's command as root inside, printed first; its output as it printed it."""
    print(f"{BOLD}# {shown or command}{RESET}", flush=True)
    cp = sd.run("bash", "-c", command, check=False, timeout=timeout, input=stdin,
                env={"DEBIAN_FRONTEND": "noninteractive", "COLUMNS": "100"})
    out = (cp.stdout + cp.stderr).rstrip("\n")
    lines = out.splitlines()
    if tail and len(lines) > tail:
        lines = ["..."] + lines[-tail:]
    if lines:
        print("\n".join(lines), flush=True)
    if cp.returncode != 0:
        raise SystemExit(f"demo: the command above failed (exit {cp.returncode})")
    return cp.stdout


def prepare_machine(sd: BootedSystemd, deb: Path) -> str:
    """FerretDB with users backup and restore and the sample shop, MinIO with a bucket."""
    uri = start_ferretdb_inside(sd, TOOLS / "ferretdb", auth=("backup", SECRETS["mongo-backup"]))
    loaded = sd.run_python(
        "import os, sys, pymongo\n"
        f"sys.path.insert(0, {str(REPO / 'scripts' / 'lib')!r})\n"
        "import sample_data\n"
        "c = pymongo.MongoClient(os.environ['U'], password=os.environ['P'],"
        " serverSelectionTimeoutMS=10000)\n"
        "c.admin.command('createUser', 'restore', pwd=os.environ['R'], roles=[])\n"
        "print(sample_data.load(c, 'shop', scale=1))\n",
        env={"U": uri, "P": SECRETS["mongo-backup"], "R": SECRETS["mongo-restore"]}).stdout.strip()
    note(f"FerretDB on 127.0.0.1:27017 (SCRAM users backup and restore), {loaded} documents "
         "in database shop")
    sd.write_file("/etc/minio.env",
                  f"MINIO_ROOT_USER={SECRETS['s3-access-key-id']}\n"
                  f"MINIO_ROOT_PASSWORD={SECRETS['s3-secret-access-key']}\n"
                  "MINIO_BROWSER=off\nMINIO_UPDATE=off\n", mode=0o600)
    sd.start_transient("minio", str(TOOLS / "minio"), "server", "/var/lib/minio", "--quiet",
                       "--address", "127.0.0.1:9000", "--console-address", "127.0.0.1:9001",
                       properties=["StateDirectory=minio", "EnvironmentFile=/etc/minio.env"])
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
        "        time.sleep(0.2)\n",
        env={"K": SECRETS["s3-access-key-id"], "S": SECRETS["s3-secret-access-key"]})
    note("MinIO on 127.0.0.1:9000 with a bucket 'backups'")
    sd.run("rm", "-f", "/usr/sbin/policy-rc.d", "/var/lib/man-db/auto-update")
    sd.run("mkdir", "-p", "/tmp/deb")
    sd.copy_in(deb, f"/tmp/deb/{deb.name}", mode=0o644)
    return uri


DIGEST = """
import hashlib, json, os, bson, pymongo
c = pymongo.MongoClient(os.environ['U'], password=os.environ['P'], serverSelectionTimeoutMS=10000)
out = {}
for db in ('shop', 'shop_restored'):
    for coll in sorted(c[db].list_collection_names()):
        docs = sorted(bson.encode(d) for d in c[db][coll].find({}))
        out[f'{db}.{coll}'] = [len(docs), hashlib.sha256(b''.join(docs)).hexdigest()]
print(json.dumps(out))
"""


def demo(sd: BootedSystemd, deb: Path) -> None:
    step("The machine: a systemd booted in private namespaces, FerretDB and MinIO beside it")
    uri = prepare_machine(sd, deb)

    step("Install the package: the agent starts at once")
    op(sd, "apt-get install -y /tmp/deb/mongosnap_*.deb", tail=3)
    op(sd, "systemctl status mongosnapd --no-pager --lines=0")

    step("Store the secrets (piped in here; typed without echo on a terminal)")
    for name in ("mongo-backup", "s3-access-key-id", "s3-secret-access-key"):
        op(sd, f"mongosnapctl set-credential {name}", stdin=SECRETS[name] + "\n",
           shown=f"mongosnapctl set-credential {name}   < secret")

    step(f"A policy whose timer fires in {SCHEDULE_AHEAD_S} seconds")
    now = datetime.datetime.now(datetime.timezone.utc)
    at = (now + datetime.timedelta(seconds=SCHEDULE_AHEAD_S)).strftime("%H:%M:%S")
    op(sd, "mongosnapctl create-policy demo "
           "Source='mongodb://backup@127.0.0.1:27017/?replicaSet=rs0&authSource=admin' "
           f"Credential=mongo-backup Schedule='*-*-* {at} UTC' "
           "Store='s3://backups/demo?endpoint=http://127.0.0.1:9000' "
           "KeepDaily=7 KeepWeekly=4 KeepManual=3")
    op(sd, "mongosnapctl list-policies")
    op(sd, "systemctl list-timers 'mongosnap-snapshot@*' --no-pager")

    step("The timer fires and the agent takes the snapshot")
    note(f"waiting for {at} UTC ...")
    deadline = time.monotonic() + TIMER_WAIT_S
    task = None
    while time.monotonic() < deadline:
        rows = json.loads(sd.run("mongosnapctl", "--json", "list-snapshots", "demo").stdout)
        done = [r for r in rows if r.get("state") in ("completed", "failed")]
        if done:
            task = done[0]
            break
        time.sleep(1)
    if not task:
        raise SystemExit(f"demo: no snapshot within {TIMER_WAIT_S} s of the timer")
    op(sd, "journalctl -u mongosnap-snapshot@demo.service --no-pager -n 4")
    op(sd, "mongosnapctl list-snapshots demo")
    if task["state"] != "completed":
        raise SystemExit(f"demo: the scheduled snapshot failed: {task.get('error')}")
    tid = task["id"]
    op(sd, f"mongosnapctl show {tid}")

    step("Restore it into a copy, shop_restored, with a credential allowed for restores")
    op(sd, "mongosnapctl set-credential mongo-restore", stdin=SECRETS["mongo-restore"] + "\n",
       shown="mongosnapctl set-credential mongo-restore   < secret")
    op(sd, "printf '\\n[Restore]\\nCredentials=mongo-restore\\n' >> /etc/mongosnap/mongosnap.conf")
    op(sd, "systemctl reload mongosnapd")
    op(sd, f"mongosnapctl restore {tid} "
           "--to 'mongodb://restore@127.0.0.1:27017/?replicaSet=rs0&authSource=admin' "
           "--credential mongo-restore --ns-from 'shop.*' --ns-to 'shop_restored.*' --wait")
    got = json.loads(sd.run_python(DIGEST, env={"U": uri, "P": SECRETS["mongo-backup"]}).stdout)
    ok = True
    for ns in sorted(k for k in got if k.startswith("shop.")):
        copy = got.get("shop_restored." + ns.split(".", 1)[1])
        same = copy == got[ns]
        ok &= same
        print(f"  {ns:<22} {got[ns][0]:>6} documents  sha256 {got[ns][1][:16]}  "
              f"{'identical' if same else 'DIFFERENT'}")
    if not ok:
        raise SystemExit("demo: the restored copy differs")

    step("What happened, from the Event Log")
    op(sd, "mongosnapctl log demo")
    op(sd, "journalctl MONGOSNAP_POLICY=demo -x --no-pager", tail=14)
    out = "\n".join(sd.journalctl("-o", "verbose", check=False).stdout.splitlines())
    leaked = [n for n, s in SECRETS.items() if n != "s3-access-key-id" and s in out]
    if leaked:
        raise SystemExit(f"demo: secrets in the journal: {leaked}")


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    deb = Path(sys.argv[1]).resolve()
    reason = boot_unavailable_reason()
    if reason:
        print(f"demo: cannot boot systemd in a namespace here ({reason}); "
              "the agent part needs root on Linux with cgroup v2", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="mongosnap-demo-boot.") as work:
        sd = BootedSystemd(Path(work), name="mongosnap-demo")
        sd.boot()
        try:
            demo(sd, deb)
            changes = sd.host_changes()
        finally:
            sd.close()
        if changes:
            print(f"demo: the host changed: {changes}", file=sys.stderr)
            return 1
    step("Done: the agent took a scheduled snapshot to S3, restored it and logged each step; "
         "the host is as it was")
    return 0


if __name__ == "__main__":
    sys.exit(main())
