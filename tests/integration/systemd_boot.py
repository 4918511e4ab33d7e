"""A real systemd booted as PID 1 of a private namespace, for tests that need the service
manager, the journal and the D-Bus system bus (unit files, sd_notify, the Event Log, timers).

    from systemd_boot import *  # noqa: F401,F403   (the booted_systemd fixture and helpers)

    SYSTEMD_BOOT_FILES = {"/etc/dbus-1/system.d/x.conf": "..."}   # optional: before boot

    def test_x(booted_systemd):
        sd = booted_systemd          # module scope: one boot (about half a second) per module
        sd.write_file("/run/systemd/system/x.service", "...")
        sd.systemctl("daemon-reload")
        sd.systemctl("start", "x.service")
        entries = sd.journal_entries("_SYSTEMD_UNIT=x.service")   # journalctl -o json, parsed
        assert sd.host_changes() == []

BootedSystemd: boot(), close(), run(*cmd), systemctl(), journalctl(), busctl(), run_python(),
wait_until_running(), wait_for(), write_file(), copy_in(), read_file(), exists(),
journal_entries(), unit_property(), start_transient() (systemd-run), host_changes();
start_ferretdb_inside() runs FerretDB as a unit inside. Commands run with run() are not units
and stay in the test's own cgroup; run what must be a unit with start_transient() or a unit file.

The technique (TESTBED.md, "A real systemd, D-Bus system bus and journal, in a namespace"),
and why each step is there:

1. The test process creates a cgroup of its own (a child of its current cgroup v2) and the
   boot process moves into it before `unshare` makes a new cgroup namespace. systemd then sees
   that cgroup as `/` and creates init.scope, system.slice, ... under it only. Without this,
   systemd (whose /proc/1/cgroup would say `/`) created them at the root of the host's
   hierarchies and moved itself out of the cgroup the test runs in (seen on the dev VM:
   memory:/init.scope); two booted systemds would also share /system.slice/X.service.
   Teardown checks that this cgroup holds no process and removes it.
2. `unshare --pid --fork --kill-child --mount --net --uts --ipc --cgroup --mount-proc`:
   the new PID namespace lets systemd be PID 1 (it refuses `--system` otherwise) and makes
   SIGKILL of that PID 1 the end of every process inside; --kill-child and setpriv's
   --pdeathsig pass a dying pytest on to it. The mount namespace keeps every mount below
   private; the network namespace keeps servers started inside off the host's ports (loopback
   is down until `ip link set lo up`, which boot() does); UTS/IPC keep hostname and SysV IPC
   private; --mount-proc gives a /proc that shows the new PID namespace.
3. SETUP_SCRIPT, run by unshare, in the new namespaces:
   - `mount --make-rprivate /`: nothing mounted below propagates back to the host.
   - a tmpfs holding an overlayfs whose lowerdir is `/`: the new root shows the host's files
     (so build trees, the tools cache and the Python venv are visible at the same paths), but
     every write lands in the tmpfs upper layer and vanishes with the namespace. The tmpfs is
     needed because an upperdir inside the lowerdir's filesystem is refused. Without the
     overlay (TESTBED.md), systemd-tmpfiles wiped the host's /tmp and systemd-sysusers wrote
     the host's /etc/passwd: host_changes() checks both (a canary file in the host's /tmp made
     before boot, hashes of the account files) and the names in the host's /dev.
     (overlayfs does not cross mount points: only files of the filesystem mounted at the
     host's `/` show; a tree on another mount shows as an empty directory.)
   - /proc: the new PID namespace's proc bind-mounted in, with /proc/sys and
     /proc/sysrq-trigger read-only: most kernel knobs are host-wide, and systemd-sysctl,
     PID 1's own fs.file-max/nr_open bump and binfmt registration would set them for the host
     (systemd-sysctl.service is masked as well).
   - /sys: a fresh read-only sysfs (udev-style writes to /sys would reach host devices), and
     on /sys/fs/cgroup a cgroup2 mount made inside the cgroup namespace, so it shows the
     cgroup of step 1 as its root (systemd runs in unified mode whatever the host uses).
   - /dev: a tmpfs with null, zero, full, random, urandom, tty bind-mounted from the host, a
     new devpts instance, shm and mqueue. TESTBED's rbind of the host's /dev let systemd and
     journald write into the host's devtmpfs (a /dev/log symlink into a /run that does not
     exist on the host, /dev/mqueue, /dev/hugepages, static nodes from tmpfiles-setup-dev) and
     the host's kernel log; a private /dev has no such path.
   - fresh tmpfs on /run and /tmp, as at a boot (the overlay would otherwise show the host's).
   - the staged files (stage_file(), SYSTEMD_BOOT_FILES) copied over the new root: into
     /run/systemd/system the target unit (DefaultDependencies=no, Wants=
     systemd-journald.socket and dbus.socket, so the journal and the system bus exist and
     nothing else of a normal boot is pulled in but sysinit.target's basics), masks (symlinks to /dev/null) for units that act on the
     host's kernel or hardware (modules, sysctl, binfmt, udev, the clock, the random seed,
     kernel file systems), a journald drop-in (volatile storage, no rate limit: tests read
     every entry) and a manager drop-in (short default timeouts); plus any file a test
     stages before boot (e.g. a bus policy in /etc/dbus-1/system.d, read when dbus starts).
   - `pivot_root` into the overlay and a lazy unmount of the old root: nothing inside can
     reach the host's root any more.
   - `mount --make-rshared /`: systemd does this itself at a real boot but leaves it to the
     container manager under `container=`; LoadCredential=/SetCredential= (and other unit
     sandboxing) build mounts in a helper's namespace and rely on them propagating back:
     with private mounts a service's $CREDENTIALS_DIRECTORY stayed empty. The peer groups are
     new ones of this namespace: nothing propagates to the host.
   - `exec env -i container=mongosnap-test /lib/systemd/systemd --system --unit=<target>`:
     `container=` makes systemd behave as in a container (units with
     ConditionVirtualization=!container are skipped, PID 1 logs to its stderr - the boot log
     file - rather than to /dev/kmsg and /dev/console); --unit boots the test target instead
     of default.target.
4. From outside: `nsenter -t <PID 1> -a CMD` runs CMD in all of those namespaces with the
   overlay as its root (run(), systemctl(), journalctl(), busctl()); files are written the
   same way (write_file(), copy_in()), never through /proc/PID/root, whose absolute symlinks
   would resolve on the host.
5. Teardown: SIGKILL to that PID 1 (as PID 1 it ignores SIGTERM; the kernel then kills
   every process of the namespace), wait for unshare, check that no process is left in the
   PID namespace or the cgroup, remove the cgroup. The mounts go with the namespace. If
   pytest itself is killed, the pdeathsig chain ends the namespace, and the next boot
   removes the empty cgroup and canary left behind.

Things learned: timers default to AccuracySec=1min (set it low in tests); systemd 252 has no
Type=notify-reload. Everything here is bounded in time; a boot takes about a second.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import pytest

__all__ = ["BootedSystemd", "BootError", "booted_systemd", "boot_unavailable_reason",
           "start_ferretdb_inside", "SYSTEMD"]

SYSTEMD = "/lib/systemd/systemd"
BOOT_TIMEOUT = 30.0  # until `systemctl is-system-running` says running
COMMAND_TIMEOUT = 30.0  # default for every command run inside
TEARDOWN_TIMEOUT = 10.0
POLL_INTERVAL = 0.05
# Set to 1 (e.g. in CI) to turn "cannot boot here" skips into failures.
REQUIRE_ENV = "MONGOSNAP_REQUIRE_SYSTEMD_BOOT"

INSIDE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
    "SYSTEMD_LOG_COLOR": "0",
}

# Units that would act on the host's kernel or hardware, or only make sense on a real boot.
MASKED_UNITS = (
    "systemd-modules-load.service", "kmod-static-nodes.service", "modprobe@.service",
    "systemd-sysctl.service", "systemd-binfmt.service", "proc-sys-fs-binfmt_misc.automount",
    "proc-sys-fs-binfmt_misc.mount", "systemd-timesyncd.service", "systemd-random-seed.service",
    "systemd-udevd.service", "systemd-udevd-control.socket", "systemd-udevd-kernel.socket",
    "systemd-udev-trigger.service", "systemd-udev-settle.service", "systemd-hwdb-update.service",
    "systemd-journald-audit.socket", "systemd-pstore.service", "systemd-remount-fs.service",
    "sys-kernel-debug.mount", "sys-kernel-tracing.mount", "sys-kernel-config.mount",
    "sys-fs-fuse-connections.mount", "dev-hugepages.mount",
)

JOURNALD_DROPIN = """\
[Journal]
# In /run (a tmpfs of the namespace); every entry kept: tests read them all.
Storage=volatile
RateLimitIntervalSec=0
RateLimitBurst=0
"""

MANAGER_DROPIN = """\
[Manager]
ShowStatus=no
LogColor=no
DefaultTimeoutStartSec=30s
DefaultTimeoutStopSec=10s
"""

# Run by unshare inside the new namespaces: $1 the (host) directory to mount the tmpfs on,
# $2 the staging tree copied over the new root, $3 the target to boot, $4 host directories under
# /tmp or /run to keep visible (space-separated). See the module docstring.
SETUP_SCRIPT = r"""#!/bin/bash
set -euo pipefail
base=$1 stage=$2 target=$3
step() { echo "mongosnap-boot: $*" >&2; }

step "private mounts"
mount --make-rprivate /

step "overlay root (lowerdir=/) on a tmpfs"
mount -t tmpfs -o mode=0700 mongosnap-boot "$base"
mkdir "$base/upper" "$base/work" "$base/root"
mount -t overlay mongosnap-root -o "lowerdir=/,upperdir=$base/upper,workdir=$base/work" "$base/root"
r=$base/root

step "/proc (kernel knobs read-only)"
mount --rbind /proc "$r/proc"
for p in sys sysrq-trigger; do
    [ -e "$r/proc/$p" ] || continue
    mount --bind "$r/proc/$p" "$r/proc/$p"
    mount -o remount,bind,ro "$r/proc/$p"
done

step "/sys read-only, cgroup2 of the cgroup namespace"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$r/sys"
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$r/sys/fs/cgroup"

step "private /dev"
mount -t tmpfs -o mode=0755,nosuid,size=4m mongosnap-dev "$r/dev"
for n in null zero full random urandom tty; do
    touch "$r/dev/$n"
    mount --bind "/dev/$n" "$r/dev/$n"
done
mkdir -m 0755 "$r/dev/pts" "$r/dev/mqueue"
mkdir -m 1777 "$r/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$r/dev/pts"
ln -s pts/ptmx "$r/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev shm "$r/dev/shm"
mount -t mqueue -o nosuid,nodev,noexec mqueue "$r/dev/mqueue"
ln -s /proc/self/fd "$r/dev/fd"
ln -s /proc/self/fd/0 "$r/dev/stdin"
ln -s /proc/self/fd/1 "$r/dev/stdout"
ln -s /proc/self/fd/2 "$r/dev/stderr"

step "fresh /run and /tmp"
mount -t tmpfs -o mode=0755,nosuid,nodev mongosnap-run "$r/run"
mount -t tmpfs -o mode=1777,nosuid,nodev mongosnap-tmp "$r/tmp"

# The fresh /tmp and /run hide whatever the host has there: a checkout, build directory or tool
# cache living there (a CI clone in /tmp) is bound back in, read-only, at the same path.
for d in ${4:-}; do
    step "host directory $d (read-only)"
    mkdir -p "$r$d"
    mount --rbind "$d" "$r$d"
    mount -o remount,bind,ro "$r$d"
done

step "staged files"
cp -a --no-preserve=ownership "$stage/." "$r/"

step "pivot_root"
cd "$r"
mkdir -p .mongosnap-oldroot
pivot_root . .mongosnap-oldroot
cd /
umount -l /.mongosnap-oldroot
rmdir /.mongosnap-oldroot
# As systemd does on a real boot (in a container it leaves this to the container manager):
# service setup relies on propagation from its helpers' namespaces, e.g. credentials.
mount --make-rshared /

step "exec systemd --unit=$target"
exec env -i container=mongosnap-test /lib/systemd/systemd --system --unit="$target"
"""


def _hidden_host_dirs() -> List[str]:
    """The directories the tests run from (checkout, build, tools, venv) that the namespace's
    fresh /tmp and /run would hide; nested ones are covered by their parent."""
    repo = Path(__file__).resolve().parents[2]
    candidates = [repo,
                  Path(os.environ.get("MONGOSNAP_BUILD_DIR", repo / "build-test")),
                  Path(os.environ.get("MONGOSNAP_TOOLS_BIN",
                                      Path.home() / ".cache" / "mongosnap-tools" / "bin")),
                  Path(os.environ.get("MONGOSNAP_VENV",
                                      Path.home() / ".cache" / "mongosnap-venv"))]
    dirs: List[str] = []
    for c in sorted({str(p.resolve()) for p in candidates if p.exists()}):
        if " " in c or not c.startswith(("/tmp/", "/run/")):
            continue
        if not any(c == d or c.startswith(d + "/") for d in dirs):
            dirs.append(c)
    return dirs


class BootError(RuntimeError):
    """The namespace could not be set up or systemd did not come up."""


def _cgroup2_mount() -> Optional[Path]:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or .../unified in hybrid)."""
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 2 and fields[2] == "cgroup2":
                    return Path(fields[1])
    except OSError:
        pass
    return None


def _own_cgroup2_path() -> Optional[str]:
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        pass
    return None


def boot_unavailable_reason() -> Optional[str]:
    """Why a systemd cannot be booted in a namespace here, or None if it should work."""
    if os.geteuid() != 0:
        return "booting systemd in a namespace needs root (mounts, pivot_root, PID namespace)"
    for tool in ("unshare", "nsenter", "setpriv", "ip"):
        if not shutil.which(tool):
            pkg = "iproute2" if tool == "ip" else "util-linux"
            return f"{tool} is not installed (Debian package {pkg})"
    if not os.access(SYSTEMD, os.X_OK):
        return f"no {SYSTEMD} (Debian package systemd)"
    try:
        with open("/proc/filesystems") as f:
            fss = f.read()
    except OSError as e:
        return f"cannot read /proc/filesystems: {e}"
    if "overlay" not in fss:
        return "the kernel has no overlayfs (modprobe overlay)"
    mnt, path = _cgroup2_mount(), _own_cgroup2_path()
    if mnt is None or path is None:
        return "no cgroup v2 hierarchy mounted (needed for the cgroup of the booted systemd)"
    if not os.access(mnt / path.lstrip("/"), os.W_OK):
        return f"cgroup {mnt / path.lstrip('/')} is not writable (read-only cgroupfs in a container?)"
    # Namespaces may be refused (a seccomp filter, user.max_*_namespaces = 0, a container
    # without CAP_SYS_ADMIN): try the exact set we use, and report unshare's own words.
    cp = subprocess.run(["unshare", "--pid", "--fork", "--mount", "--net", "--uts", "--ipc",
                         "--cgroup", "--mount-proc", "true"],
                        capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    if cp.returncode != 0:
        return f"unshare refused the namespaces: {cp.stderr.strip() or cp.returncode}"
    return None


def _pid_ns(pid: int) -> Optional[str]:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _processes_in_pid_ns(ns: str) -> List[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _pid_ns(int(entry)) == ns:
            pids.append(int(entry))
    return pids


def _children_of(pid: int) -> List[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses.
        if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
            kids.append(int(entry))
    return kids


def _cgroup_procs(root: Path) -> List[int]:
    procs: List[int] = []
    for dirpath, _dirs, _files in os.walk(root):
        try:
            procs += [int(p) for p in (Path(dirpath) / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            pass
    return procs


def _remove_cgroup_tree(root: Path) -> None:
    for dirpath, _dirs, _files in os.walk(root, topdown=False):
        try:
            os.rmdir(dirpath)
        except FileNotFoundError:
            pass


def _remove_stale_cgroups(parent: Path) -> None:
    """Empty cgroups of earlier boots whose test process is gone (killed before teardown)."""
    for d in parent.glob("mongosnap-boot-*-*"):
        owner = d.name.split("-")[2]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists() and not _cgroup_procs(d):
            try:
                _remove_cgroup_tree(d)
            except OSError:
                pass


HOST_FILES = ("/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow", "/etc/machine-id")


def host_fingerprint() -> Dict[str, object]:
    """What a leaking boot changed on the host before: the account files sysusers writes and the
    names in the host's /dev (systemd and journald created /dev/log, /dev/mqueue, ...)."""
    fp: Dict[str, object] = {}
    for f in HOST_FILES:
        try:
            fp[f] = hashlib.sha256(Path(f).read_bytes()).hexdigest()
        except OSError as e:
            fp[f] = f"unreadable: {e.strerror}"
    fp["/dev"] = sorted(os.listdir("/dev"))
    return fp


CANARY_GLOB = "mongosnap-boot-canary-*"


def _remove_stale_canaries(tmp: Path = Path("/tmp")) -> List[Path]:
    """Remove the canaries no live boot holds; returns them. A boot holds its canary with an
    flock for as long as it runs: the lock, not a PID in the name, says whether its owner is
    alive. (A PID said it wrongly: a run in another PID namespace, or a PID reused, made one
    run's sweep remove another run's live canary, whose teardown then reported the host's /tmp
    changed.) The lock is taken before the file is removed, so a canary being created, which
    is locked before it is written, is never taken."""
    removed = []
    for f in tmp.glob(CANARY_GLOB):
        try:
            fd = os.open(f, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # a live boot holds it
        try:
            f.unlink()
            removed.append(f)
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)
    return removed


def make_canary(tmp: Path = Path("/tmp")) -> Tuple[Path, int]:
    """A canary file in tmp holding b"host", locked (flock) by the returned descriptor, which
    the owner keeps open while it runs: closing it (or dying) makes the canary stale."""
    # Made under another name and renamed once locked: a sweep never sees it unlocked.
    fd, name = tempfile.mkstemp(prefix="mongosnap-boot-new-", dir=str(tmp))
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"host")
    canary = Path(name).with_name("mongosnap-boot-canary-" + Path(name).name[len("mongosnap-boot-new-"):])
    os.rename(name, canary)
    return canary, fd


class BootedSystemd:
    """One systemd booted as PID 1 of private namespaces (see the module docstring).

    Stage files before boot() with stage_file(); afterwards use write_file()/copy_in().
    """

    _seq = 0

    def __init__(self, workdir: Path, name: str = "mongosnap-test", wants: Sequence[str] = ()):
        BootedSystemd._seq += 1
        self.workdir = Path(workdir)
        self.name = name
        self.target = f"{name}.target"
        self.wants = ["systemd-journald.socket", "dbus.socket", *wants]
        self.stage = self.workdir / "stage"
        self.base = self.workdir / "mnt"
        self.script = self.workdir / "setup.sh"
        self.logfile = self.workdir / "boot.log"
        self.proc: Optional[subprocess.Popen] = None
        self.pid: Optional[int] = None  # PID 1 of the namespace, as the host numbers it
        self.pid_ns: Optional[str] = None
        self.cgroup: Optional[Path] = None
        self.host_before: Dict[str, object] = {}
        self.host_canary: Optional[Path] = None  # a file in the host's /tmp made before boot
        self._canary_fd: Optional[int] = None  # holds the canary's flock while the boot runs
        self._log = None
        for d in (self.stage, self.base):
            d.mkdir(parents=True, exist_ok=True)
        units = "run/systemd/system"
        self.stage_file(f"{units}/{self.target}",
                        "[Unit]\n"
                        f"Description=mongosnap test boot ({name})\n"
                        "DefaultDependencies=no\n"
                        f"Wants={' '.join(self.wants)}\n"
                        f"After={' '.join(self.wants)}\n")
        for unit in MASKED_UNITS:
            link = self.stage / units / unit
            if not link.is_symlink():
                link.symlink_to("/dev/null")
        self.stage_file("run/systemd/journald.conf.d/50-mongosnap-test.conf", JOURNALD_DROPIN)
        self.stage_file("run/systemd/system.conf.d/50-mongosnap-test.conf", MANAGER_DROPIN)

    # ---- before boot ----
    def stage_file(self, path_inside: str, text: Union[str, bytes], mode: int = 0o644) -> Path:
        """Put a file into the root before boot (e.g. units, a bus policy dbus reads at start)."""
        assert self.proc is None, "stage_file() is for before boot(); use write_file()"
        p = self.stage / path_inside.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, str):
            p.write_text(text)
        else:
            p.write_bytes(text)
        p.chmod(mode)
        return p

    # ---- lifecycle ----
    def boot(self, timeout: float = BOOT_TIMEOUT) -> "BootedSystemd":
        assert self.proc is None, "already booted"
        self.script.write_text(SETUP_SCRIPT)
        self.script.chmod(0o755)
        # systemd-tmpfiles empties /tmp at boot: a file there must survive ours.
        _remove_stale_canaries()
        self.host_canary, self._canary_fd = make_canary()
        self.host_before = host_fingerprint()
        mnt, own = _cgroup2_mount(), _own_cgroup2_path()
        if mnt is None or own is None:
            raise BootError("no cgroup v2 hierarchy")
        parent = mnt / own.lstrip("/")
        _remove_stale_cgroups(parent)
        self.cgroup = parent / f"mongosnap-boot-{os.getpid()}-{BootedSystemd._seq}"
        self.cgroup.mkdir()
        # setpriv: SIGKILL unshare if pytest dies; sh: join the cgroup, then become unshare
        # (so the cgroup namespace is rooted there); unshare --kill-child: SIGKILL systemd
        # when unshare dies.
        cmd = ["setpriv", "--pdeathsig", "KILL", "--",
               "sh", "-c", 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"', "sh",
               str(self.cgroup),
               "unshare", "--pid", "--fork", "--kill-child=SIGKILL", "--mount", "--net", "--uts",
               "--ipc", "--cgroup", "--mount-proc",
               str(self.script), str(self.base), str(self.stage), self.target,
               " ".join(_hidden_host_dirs())]
        self._log = open(self.logfile, "ab")
        self._log.write(f"=== {shlex.join(cmd)}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=dict(INSIDE_ENV))
        try:
            self._find_pid1(timeout)
            self.run("ip", "link", "set", "lo", "up")
            self.wait_until_running(timeout)
        except BaseException:
            self.close(check=False)
            raise
        return self

    def _find_pid1(self, timeout: float) -> None:
        """The host PID of the namespace's PID 1: unshare's child, once it runs systemd."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BootError(f"the boot script exited ({self.proc.returncode}):\n{self.log_text()}")
            for kid in _children_of(self.proc.pid):
                try:
                    exe = os.readlink(f"/proc/{kid}/exe")
                except OSError:
                    continue
                if os.path.basename(exe) == "systemd":
                    self.pid = kid
                    self.pid_ns = _pid_ns(kid)
                    return
            time.sleep(POLL_INTERVAL)
        raise BootError(f"systemd did not start within {timeout}s:\n{self.log_text()}")

    def wait_until_running(self, timeout: float = BOOT_TIMEOUT) -> str:
        """Poll `systemctl is-system-running` until `running`; anything else after the boot
        has settled (degraded: a unit failed) raises with the failed units and the journal."""
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            self._check_alive()
            cp = self.run("systemctl", "is-system-running", check=False, timeout=5)
            state = cp.stdout.strip()
            if state == "running":
                return state
            if state in ("degraded", "maintenance", "stopping", "offline"):
                break
            time.sleep(POLL_INTERVAL * 2)
        failed = self.run("systemctl", "--failed", "--no-legend", check=False).stdout
        raise BootError(f"systemd is {state or 'not answering'} after boot (waited up to "
                        f"{timeout}s); failed units:\n{failed}\njournal:\n"
                        f"{self.journalctl('-b', '-n', '60', check=False).stdout}\n"
                        f"boot log:\n{self.log_text()}")

    def _check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None or self.pid is None:
            raise BootError(f"the booted systemd is gone:\n{self.log_text()}")

    def close(self, check: bool = True) -> None:
        """SIGKILL PID 1 of the namespace; check that no process of it is left (in its PID
        namespace or in its cgroup); remove the cgroup. Idempotent."""
        problems = []
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        elif self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # systemd never started: end the setup script
        if self.proc is not None:
            try:
                self.proc.wait(timeout=TEARDOWN_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                problems.append(f"unshare (pid {self.proc.pid}) did not exit after PID 1 was killed")
        deadline = time.monotonic() + TEARDOWN_TIMEOUT
        left: List[int] = []
        while time.monotonic() < deadline:
            left = sorted(set((_processes_in_pid_ns(self.pid_ns) if self.pid_ns else []) +
                              (_cgroup_procs(self.cgroup) if self.cgroup and self.cgroup.exists() else [])))
            if not left:
                break
            time.sleep(POLL_INTERVAL)
        if left:
            problems.append(f"processes of the booted systemd left after SIGKILL of PID 1: {left}")
        if self.cgroup is not None and self.cgroup.exists() and not left:
            try:
                _remove_cgroup_tree(self.cgroup)
            except OSError as e:
                problems.append(f"cannot remove cgroup {self.cgroup}: {e}")
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.host_canary is not None:
            self.host_canary.unlink(missing_ok=True)
        if self._canary_fd is not None:
            os.close(self._canary_fd)
            self._canary_fd = None
        self.pid = None
        if problems and check:
            raise AssertionError("; ".join(problems))

    def host_changes(self) -> List[str]:
        """What changed on the host since just before boot, of what a leaking boot changes:
        [] when the namespace kept to itself."""
        changes = []
        if self.host_canary is not None:
            try:
                if self.host_canary.read_bytes() != b"host":
                    changes.append(f"{self.host_canary} was rewritten")
            except FileNotFoundError:
                changes.append(f"{self.host_canary} (host /tmp) was removed")
        now = host_fingerprint()
        for key, before in self.host_before.items():
            if now.get(key) != before:
                if key == "/dev":
                    added = sorted(set(now[key]) - set(before))
                    gone = sorted(set(before) - set(now[key]))
                    changes.append(f"host /dev changed: added {added}, removed {gone}")
                else:
                    changes.append(f"host {key} changed")
        return changes

    def __enter__(self) -> "BootedSystemd":
        return self.boot()

    def __exit__(self, *exc) -> None:
        self.close(check=exc[0] is None)

    def log_text(self) -> str:
        """The boot script's and PID 1's own output."""
        try:
            return self.logfile.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # ---- commands inside ----
    def run(self, *cmd: str, check: bool = True, timeout: float = COMMAND_TIMEOUT,
            input: Union[str, bytes, None] = None, env: Optional[Mapping[str, str]] = None,
            text: bool = True) -> subprocess.CompletedProcess:
        """Run cmd in every namespace of the booted systemd (root: the overlay), bounded in
        time. The environment is INSIDE_ENV plus env, nothing of the host's. check: raise
        AssertionError with the output on a non-zero exit."""
        if self.pid is None:
            raise BootError("not booted")
        full = ["nsenter", "-t", str(self.pid), "-a", "--", *map(str, cmd)]
        environ = dict(INSIDE_ENV)
        environ.update(env or {})
        if isinstance(input, str) and not text:
            input = input.encode()
        try:
            cp = subprocess.run(full, capture_output=True, text=text, timeout=timeout,
                                input=input, env=environ,
                                stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise AssertionError(f"timed out after {timeout}s inside the booted systemd: "
                                 f"{shlex.join(map(str, cmd))}\nstdout:\n{e.stdout}\n"
                                 f"stderr:\n{e.stderr}") from None
        if check and cp.returncode != 0:
            raise AssertionError(f"exit {cp.returncode} inside the booted systemd: "
                                 f"{shlex.join(map(str, cmd))}\nstdout:\n{cp.stdout}\n"
                                 f"stderr:\n{cp.stderr}")
        return cp

    def systemctl(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run("systemctl", "--no-pager", *args, **kw)

    def journalctl(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run("journalctl", "--no-pager", *args, **kw)

    def busctl(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run("busctl", "--no-pager", *args, **kw)

    def run_python(self, code: str, *args: str, **kw) -> subprocess.CompletedProcess:
        """Run Python code inside with this interpreter (the test venv: visible through the
        overlay, so pymongo & co. work against servers in the namespace's network)."""
        return self.run(sys.executable, "-c", code, *args, **kw)

    # ---- files inside ----
    def write_file(self, path_inside: str, data: Union[str, bytes], mode: int = 0o644) -> None:
        """Create or replace a file inside (parent directories created), through nsenter."""
        if not path_inside.startswith("/"):
            raise ValueError(f"not an absolute path: {path_inside}")
        payload = data.encode() if isinstance(data, str) else data
        self.run("sh", "-c", 'mkdir -p -- "$(dirname -- "$1")" && cat > "$1.tmp-ms" && '
                             'chmod "$2" "$1.tmp-ms" && mv -f -- "$1.tmp-ms" "$1"',
                 "sh", path_inside, f"{mode:o}", input=payload, text=False)

    def copy_in(self, host_path: Union[str, Path], path_inside: str,
                mode: Optional[int] = None) -> None:
        """Copy a host file into the namespace (keeping its mode unless mode is given)."""
        host_path = Path(host_path)
        self.write_file(path_inside, host_path.read_bytes(),
                        mode if mode is not None else host_path.stat().st_mode & 0o7777)

    def read_file(self, path_inside: str) -> str:
        return self.run("cat", "--", path_inside).stdout

    def exists(self, path_inside: str) -> bool:
        return self.run("test", "-e", path_inside, check=False).returncode == 0

    # ---- conveniences ----
    def journal_entries(self, *matches: str, extra: Sequence[str] = ()) -> List[dict]:
        """Journal entries (all boots of this journal) matching FIELD=value matches, oldest
        first, as dicts from `journalctl -o json`."""
        cp = self.journalctl("-o", "json", *extra, *matches)
        return [json.loads(line) for line in cp.stdout.splitlines() if line.strip()]

    def unit_property(self, unit: str, prop: str) -> str:
        return self.systemctl("show", unit, "-p", prop, "--value").stdout.rstrip("\n")

    def wait_for(self, predicate, what: str, timeout: float = 30.0, interval: float = 0.1):
        """predicate() until truthy (returned), bounded; raises naming `what`."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            self._check_alive()
            last = predicate()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")

    def wait_for_tcp(self, port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
        code = ("import socket,sys,time\n"
                "d=time.monotonic()+float(sys.argv[3])\n"
                "while True:\n"
                "  try:\n"
                "    socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=1).close(); break\n"
                "  except OSError:\n"
                "    if time.monotonic()>d: sys.exit('not listening')\n"
                "    time.sleep(0.05)\n")
        self.run_python(code, host, str(port), str(timeout), timeout=timeout + 10)

    def start_transient(self, unit: str, *cmd: str, properties: Sequence[str] = (),
                        timeout: float = COMMAND_TIMEOUT) -> None:
        """`systemd-run --unit=UNIT` a service inside (Type=exec: started once exec'd)."""
        props = [f"--property={p}" for p in ("Type=exec", *properties)]
        self.run("systemd-run", f"--unit={unit}", "--quiet", "--collect", *props, "--", *cmd,
                 timeout=timeout)


def start_ferretdb_inside(sd: BootedSystemd, binary: Union[str, Path], port: int = 27017,
                          unit: str = "ferretdb", auth: Optional[tuple] = None,
                          timeout: float = 30.0) -> str:
    """FerretDB (SQLite backend, --repl-set-name=rs0) as the transient service UNIT inside the
    namespace, on 127.0.0.1:PORT of its own network. auth=(user, password) turns SCRAM on with
    that first user in admin; the password goes through an EnvironmentFile, so it shows in no
    command line or journal entry. Returns the URI (without password) once it answers."""
    binary = Path(binary)
    if not os.access(binary, os.X_OK):
        raise BootError(f"FerretDB is not built: no executable {binary} (run scripts/check)")
    props = [f"StateDirectory={unit}", f"Description=FerretDB for tests ({unit})"]
    args = [str(binary), "--handler=sqlite", f"--sqlite-url=file:/var/lib/{unit}/",
            f"--listen-addr=127.0.0.1:{port}", f"--state-dir=/var/lib/{unit}",
            "--debug-addr=-", "--telemetry=disable", "--repl-set-name=rs0", "--log-level=warn"]
    if auth:
        user, password = auth
        env_file = f"/etc/{unit}.env"
        sd.write_file(env_file, f"FERRETDB_SETUP_PASSWORD={password}\n", mode=0o600)
        props.append(f"EnvironmentFile={env_file}")
        args += ["--test-enable-new-auth=true", "--setup-database=admin",
                 f"--setup-username={user}"]
    sd.start_transient(unit, *args, properties=props)
    sd.wait_for_tcp(port, timeout=timeout)
    cred = f"{auth[0]}@" if auth else ""
    opts = "replicaSet=rs0" + ("&authSource=admin" if auth else "")
    return f"mongodb://{cred}127.0.0.1:{port}/?{opts}"


@pytest.fixture(scope="module")
def booted_systemd(request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[BootedSystemd]:
    """A systemd booted in private namespaces, one per test module (a boot takes about a
    second, but what a module sets up inside usually costs more); killed and checked after.

    A module may define SYSTEMD_BOOT_FILES = {"/abs/path": "text" or (text, mode)}: files put
    into the root before boot (units, a bus policy that dbus must read when it starts).
    Skips (or fails, with MONGOSNAP_REQUIRE_SYSTEMD_BOOT=1) where booting is impossible."""
    reason = boot_unavailable_reason()
    if reason:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"cannot boot systemd in a namespace: {reason}", pytrace=False)
        pytest.skip(f"cannot boot systemd in a namespace: {reason}")
    sd = BootedSystemd(tmp_path_factory.mktemp("systemd-boot"))
    for path, content in getattr(request.module, "SYSTEMD_BOOT_FILES", {}).items():
        text, mode = content if isinstance(content, tuple) else (content, 0o644)
        sd.stage_file(path, text, mode)
    sd.boot()
    try:
        yield sd
    finally:
        sd.close()
