"""The driver of bench/dedup-bench (see its header)."""

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import measure as ms  # noqa: E402
from tool_bench import MIB, Wire, log, machine_info  # noqa: E402

REPO = os.environ["MS_REPO_ROOT"]
WORK = os.environ["MS_BENCH_WORK"]
BUILD = os.environ["MS_BENCH_BUILD"]
TOOLS = os.environ["MS_TOOLS_BIN"]
WORKER = os.path.join(BUILD, "src/worker/mongosnap-worker")


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except FileNotFoundError:
                pass
    return total


def size_arg(s):
    s = s.strip()
    for suffix, mult in (("KiB", 1024), ("K", 1024), ("MiB", MIB)):
        if s.endswith(suffix):
            return int(s[: -len(suffix)]) * mult
    return int(s)


def run(label, argv, logs, servers=(), env=None, stdin_file=None):
    if stdin_file:
        # GNU time around a shell that feeds the file: the tool's CPU includes the shell's (~0)
        argv = ["sh", "-c", 'exec "$0" "$@" < ' + shlex_quote(stdin_file), *argv]
    return ms.measure(label, argv, os.path.join(logs, label), servers=servers, env=env)


def shlex_quote(s):
    return "'" + s.replace("'", "'\\''") + "'"


def main():
    ap = argparse.ArgumentParser(prog="bench/dedup-bench")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--chunk-sizes", default="8KiB,16KiB,32KiB")
    ap.add_argument("--update", type=float, default=0.01)
    ap.add_argument("--insert", type=float, default=0.002)
    ap.add_argument("--delete", type=float, default=0.001)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "results"))
    a = ap.parse_args()
    if a.quick:
        a.scale, a.days, a.chunk_sizes = 0.05, 3, "16KiB"
    sizes = [size_arg(s) for s in a.chunk_sizes.split(",")]
    started = datetime.datetime.now(datetime.timezone.utc)
    logs = os.path.join(WORK, "logs")
    os.makedirs(logs, exist_ok=True)
    src = Wire("src", "--scale", str(a.scale))
    tgt = Wire("tgt", "--target")
    stores = {f"chunked-{s // 1024}k": os.path.join(WORK, f"store-chunked-{s // 1024}k") for s in sizes}
    stores["archive"] = os.path.join(WORK, "store-archive")
    for p in stores.values():
        os.makedirs(p, mode=0o750)
    restic_repo, borg_repo = os.path.join(WORK, "restic"), os.path.join(WORK, "borg")
    env = dict(os.environ, RESTIC_PASSWORD="bench-not-secret", BORG_PASSPHRASE="",
               BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes", BORG_RELOCATED_REPO_ACCESS_IS_OK="yes",
               HOME=WORK)
    subprocess.run(["restic", "init", "--repo", restic_repo], env=env, check=True, capture_output=True)
    subprocess.run(["borg", "init", "--encryption", "none", borg_repo], env=env, check=True,
                   capture_output=True)
    versions = {
        "restic": subprocess.run(["restic", "version"], capture_output=True, text=True).stdout.strip(),
        "borg": subprocess.run(["borg", "--version"], capture_output=True, text=True).stdout.strip(),
    }
    days = []
    for day in range(a.days):
        src.client.admin.command({"benchSetDay": day, "update": a.update, "insert": a.insert, "delete": a.delete})
        digest = src.digest()
        bson_bytes = sum(c["bytes"] for c in digest)
        rec = {"day": day, "documents": sum(c["count"] for c in digest), "bson_bytes": bson_bytes, "tools": {}}
        name = f"d{day}"
        for sid, store in stores.items():
            before = du(store)
            argv = [WORKER, "snapshot", "--uri-file", src.uri_file, "--store", store, "--prefix", "pol",
                    "--name", name, "--no-oplog"]
            if sid.startswith("chunked"):
                argv += ["--format", "chunked", "--chunk-size", f"{int(sid.split('-')[1][:-1])}KiB"]
            ms.wait_quiet(60)
            m = run(f"{sid}-{name}", argv, logs, servers=[("source", src.pid)])
            m["stored_delta"] = du(store) - before
            m["stored_total"] = du(store)
            rec["tools"][sid] = m
        dump = os.path.join(WORK, "dump.archive")
        ms.wait_quiet(60)
        m = run(f"mongodump-{name}", [os.path.join(TOOLS, "mongodump"), "--uri", src.uri, f"--archive={dump}",
                                      "--quiet"], logs, servers=[("source", src.pid)])
        rec["tools"]["mongodump"] = m
        for tool, argv in (("restic", ["restic", "--repo", restic_repo, "backup", "--stdin",
                                       "--stdin-filename", "dump.archive", "--quiet"]),
                           ("borg", ["borg", "create", "--compression", "zstd,3", f"{borg_repo}::{name}", "-"])):
            repo = restic_repo if tool == "restic" else borg_repo
            before = du(repo)
            ms.wait_quiet(60)
            m = run(f"{tool}-{name}", argv, logs, env=env, stdin_file=dump)
            m["stored_delta"] = du(repo) - before
            m["stored_total"] = du(repo)
            rec["tools"][tool] = m
        os.unlink(dump)
        full = rec["tools"]["archive"]["stored_delta"]
        log(f"day {day}: " + ", ".join(
            f"{k} +{v['stored_delta'] / MIB:.1f} MiB ({v['stored_delta'] / full:.3f}) {v['wall_s']:.2f}s"
            for k, v in rec["tools"].items() if "stored_delta" in v))
        days.append(rec)
    # restores of the last day, each checked against the source
    restores = {}
    last = f"d{a.days - 1}"
    want = src.digest()
    pick = "chunked-16k" if "chunked-16k" in stores else next(k for k in stores if k.startswith("chunked"))
    for sid in (pick, "archive"):
        tgt.reset()
        ms.wait_quiet(60)
        m = run(f"restore-{sid}", [WORKER, "restore", "--uri-file", tgt.uri_file, "--store", stores[sid],
                                   "--snapshot", f"pol/{last}"], logs, servers=[("target", tgt.pid)])
        got = tgt.digest()
        if got != want:
            raise SystemExit(f"restore of {sid} {last}: the target's digest differs from the source's")
        m["verified"] = True
        restores[sid] = m
        log(f"restore {sid} {last}: {m['wall_s']:.2f}s, digest equal")
    src.stop()
    tgt.stop()
    meta = {"started": started.strftime("%Y-%m-%d %H:%M UTC"), "args": vars(a), "machine": machine_info(),
            "versions": versions}
    os.makedirs(a.out, exist_ok=True)
    stem = f"dedup-{started:%Y%m%d}" + ("-quick" if a.quick else "")
    with open(os.path.join(a.out, stem + ".json"), "w") as f:
        json.dump({"meta": meta, "days": days, "restores": restores}, f, indent=1)
    md = markdown(meta, days, restores, a)
    with open(os.path.join(a.out, stem + ".md"), "w") as f:
        f.write(md)
    print(md)


def markdown(meta, days, restores, a):
    tools = [k for k in days[0]["tools"] if "stored_delta" in days[0]["tools"][k]]
    lines = [f"Run of {meta['started']}, scale {a.scale:g}, {a.days} days, per day {a.update:.1%} of documents "
             f"updated, {a.insert:.1%} inserted, {a.delete:.1%} deleted; {meta['machine']['cpus']} CPUs, "
             f"mongosnap {meta['machine']['commit']}; {meta['versions']['restic']}; {meta['versions']['borg']}."
             + (" QUICK RUN." if a.quick else ""), "",
             "Stored bytes added each day, as a fraction of that day's full compressed snapshot (the archive "
             "format's object):", "",
             "| day | BSON MiB | archive (full) MiB | " + " | ".join(t for t in tools if t != "archive") + " |",
             "|---:|---:|---:|" + "---:|" * (len(tools) - 1)]
    for d in days:
        full = d["tools"]["archive"]["stored_delta"]
        cells = [f"{d['tools'][t]['stored_delta'] / full:.3f}" for t in tools if t != "archive"]
        lines.append(f"| {d['day']} | {d['bson_bytes'] / MIB:.1f} | {full / MIB:.1f} | " + " | ".join(cells) + " |")
    later = days[1:] or days
    lines += ["", "Mean over days 1 and after (day 0 stores everything): "
              + ", ".join(f"{t} {sum(d['tools'][t]['stored_delta'] / d['tools']['archive']['stored_delta'] for d in later) / len(later):.3f}"
                          for t in tools if t != "archive"), "",
              "Time per day (median wall s / CPU s; restic and borg are fed the mongodump archive, whose "
              "own time is in its column):", "",
              "| tool | wall s | CPU s | MiB/s of BSON |", "|---|---:|---:|---:|"]
    import statistics
    for t in list(days[0]["tools"]):
        w = statistics.median(d["tools"][t]["wall_s"] for d in days)
        c = statistics.median(d["tools"][t]["cpu_s"] for d in days)
        b = statistics.median(d["bson_bytes"] for d in days)
        lines.append(f"| {t} | {w:.2f} | {c:.2f} | {b / MIB / w:.0f} |")
    lines += ["", "Restore of the last day (into a wire-source target, checked by digest):", "",
              "| snapshot | wall s | CPU s | peak RSS MiB |", "|---|---:|---:|---:|"]
    for sid, m in restores.items():
        lines.append(f"| {sid} | {m['wall_s']:.2f} | {m['cpu_s']:.2f} | {m['max_rss_kib'] / 1024:.0f} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
