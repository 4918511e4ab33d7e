"""Measuring one command the way every benchmark here does: wall time, the tool's CPU and peak
RSS (GNU time), the CPU and peak RSS of the servers it talks to (/proc), and the CPU everything
else on the machine used meanwhile (/proc/stat), plus waiting for an idle machine and measuring
again when other work took a noticeable share of the CPUs."""

import os
import signal
import subprocess
import time

TICK = os.sysconf("SC_CLK_TCK")


def busy_cpu_seconds():
    """CPU time all processes on the machine have used so far (from /proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / TICK


def proc_cpu_seconds(pid):
    """user+sys CPU a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def reset_peak_rss(pid):
    """Make VmHWM start again from the current RSS (Linux: clear_refs 5)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def measure(label, argv, log_base, servers=(), env=None):
    """Run argv to completion under GNU time. servers: (name, pid) pairs whose CPU and peak RSS
    during the run are reported as <name>_cpu_s and <name>_peak_rss_kib. GNU time rather than a
    wait4 from Python: a child forked from this interpreter would count the interpreter's RSS
    before exec as its peak."""
    out = open(log_base + ".out", "wb")
    timed = ["/usr/bin/time", "-o", log_base + ".time", "-f", "%U %S %M", *argv]
    busy0 = busy_cpu_seconds()
    cpu0 = {}
    for name, pid in servers:
        cpu0[name] = proc_cpu_seconds(pid)
        reset_peak_rss(pid)
    t0 = time.monotonic()
    proc = subprocess.Popen(timed, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True, env=env)
    try:
        rc = proc.wait()
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    wall = time.monotonic() - t0
    m = {}
    servers_cpu = 0.0
    for name, pid in servers:
        c = proc_cpu_seconds(pid) - cpu0[name]
        servers_cpu += c
        m[f"{name}_cpu_s"] = round(c, 2)
        m[f"{name}_peak_rss_kib"] = peak_rss_kib(pid)
    busy = busy_cpu_seconds() - busy0
    out.close()
    if rc != 0:
        with open(out.name, errors="replace") as f:
            tail = f.read()[-3000:]
        raise RuntimeError(f"{label}: {argv[0]} exited with {rc}:\n{tail}")
    with open(log_base + ".time") as f:
        user, sys_, rss = f.read().split()[-3:]
    cpu = float(user) + float(sys_)
    m.update({"wall_s": round(wall, 3), "user_s": float(user), "sys_s": float(sys_), "cpu_s": round(cpu, 2),
              "max_rss_kib": int(rss),
              # everything else the machine did meanwhile (other jobs, the driver, the kernel)
              "other_cpu_s": round(max(0.0, busy - cpu - servers_cpu), 1)})
    return m


def wait_quiet(max_wait=180):
    """Wait (up to max_wait s) until the machine is idle apart from us: less than 10% of one CPU
    busy over 2 s. Returns the seconds waited."""
    t = time.monotonic()
    while True:
        b0 = busy_cpu_seconds()
        time.sleep(2)
        if busy_cpu_seconds() - b0 < 0.2 or time.monotonic() - t > max_wait:
            return round(time.monotonic() - t, 1)


def contended(m):
    """Did other work take a noticeable share of the CPUs during the measurement?"""
    return m["other_cpu_s"] > 1 + 0.1 * m["wall_s"] * (os.cpu_count() or 1)


def least_contended(attempt, retries, log=None, max_wait=180):
    """Measure with attempt(); while other work took a noticeable share of the CPUs, measure
    again (at most `retries` more times) and keep the least disturbed attempt."""
    tries = []
    for k in range(1 + retries):
        waited = wait_quiet(max_wait)
        m = attempt()
        m["waited_for_quiet_s"] = waited
        tries.append(m)
        if not contended(m):
            break
        if log and k < retries:
            log(f"other work used {m['other_cpu_s']}s of CPU during the measurement; measuring again")
    best = dict(min(tries, key=lambda m: m["other_cpu_s"]))
    best["attempts"] = [{k: t[k] for k in ("wall_s", "cpu_s", "other_cpu_s")} for t in tries]
    best["contended"] = contended(best)
    return best
