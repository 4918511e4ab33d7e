"""The driver of bench/tool-bench (see its header): the dump and restore tools against
bench/wire-source, the write pipeline alone as the bound, results as JSON and a Markdown table."""

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time

import pymongo

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import measure as ms  # noqa: E402

REPO = os.environ["MS_REPO_ROOT"]
WORK = os.environ["MS_BENCH_WORK"]
BUILD = os.environ["MS_BENCH_BUILD"]
TOOLS = os.environ["MS_TOOLS_BIN"]
WORKER = os.path.join(BUILD, "src/worker/mongosnap-worker")
WIRE = os.path.join(BUILD, "bench/wire-source/wire-source")
BOUND = os.path.join(BUILD, "bench/pipeline-bound/pipeline-bound")
MIB = 1024 * 1024
GIB = 1024 * MIB
T0 = time.monotonic()


def log(msg):
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def on_term(signum, frame):
    raise SystemExit(f"stopped by signal {signum}")


signal.signal(signal.SIGTERM, on_term)


class Wire:
    """One wire-source process (source at a scale, or --target)."""

    def __init__(self, name, *args):
        self.dir = os.path.join(WORK, name)
        os.makedirs(self.dir, exist_ok=True)
        port_file = os.path.join(self.dir, "port")
        self.log = open(os.path.join(self.dir, "wire-source.log"), "wb")
        self.proc = subprocess.Popen([WIRE, "--port-file", port_file, *args], stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 600
        while not os.path.exists(port_file):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"wire-source {args} did not start; see {self.log.name}")
            time.sleep(0.1)
        with open(port_file) as f:
            self.port = int(f.read())
        self.pid = self.proc.pid
        self.uri = f"mongodb://127.0.0.1:{self.port}/?directConnection=true"
        self.uri_file = os.path.join(self.dir, "uri")
        with open(self.uri_file, "w") as f:
            f.write(f"mongodb://127.0.0.1:{self.port}/\n")
        self.client = pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=10000)

    def digest(self):
        return sorted(self.client.admin.command("benchDigest")["collections"], key=lambda c: c["ns"])

    def reset(self):
        self.client.admin.command("benchReset")

    def stop(self):
        self.client.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


SNAPSHOTS = [
    # id, description, argv after the tool
    ("md-plain", "mongodump --archive=FILE", "mongodump", []),
    ("md-gzip", "mongodump --archive=FILE --gzip", "mongodump", ["--gzip"]),
] + [
    (f"ms-{c}{'-l1' if lvl else ''}-p{p}",
     f"mongosnap-worker snapshot --compression {c}{' --level 1' if lvl else ''} --parallel {p}",
     "mongosnap", ["--compression", c, "--parallel", str(p)] + (["--level", "1"] if lvl else []))
    for c, lvl in (("zstd", False), ("zstd", True), ("gzip", False), ("none", False)) for p in (1, 2, 4)
]
RESTORES = [
    ("mr-default", "mongorestore --archive=FILE (defaults)", "mongorestore", []),
    ("mr-tuned", "mongorestore --archive=FILE --numParallelCollections=4 --numInsertionWorkersPerCollection=4",
     "mongorestore", ["--numParallelCollections=4", "--numInsertionWorkersPerCollection=4"]),
    ("ms-default", "mongosnap-worker restore (defaults: --parallel 4 --batch-size 1000)", "mongosnap", []),
    ("ms-tuned", "mongosnap-worker restore --parallel 2 --batch-size 5000", "mongosnap",
     ["--parallel", "2", "--batch-size", "5000"]),
]
BOUNDS = [
    ("zstd-l3", "zstd level 3 (the default), 2 threads + SHA-256", ["--compression", "zstd", "--threads", "2"]),
    ("zstd-l3-aes", "zstd level 3, 2 threads + AES-256-GCM + SHA-256",
     ["--compression", "zstd", "--threads", "2", "--encrypt"]),
    ("zstd-l1", "zstd level 1, 2 threads + SHA-256", ["--compression", "zstd", "--threads", "2", "--level", "1"]),
    ("gzip", "gzip (one thread) + SHA-256", ["--compression", "gzip"]),
    ("none", "no compression + SHA-256", ["--compression", "none"]),
]


def snapshot_argv(kind, args, src, out):
    if kind == "mongodump":
        return [os.path.join(TOOLS, "mongodump"), "--uri", src.uri, f"--archive={out}", "--quiet", *args]
    return [WORKER, "snapshot", "--uri-file", src.uri_file, "--store", out, "--name", "bench", "--no-oplog", *args]


def run_scale(scale, repeats, retries, max_wait, results):
    tag = f"x{scale:g}"
    log(f"scale {scale:g}: starting wire-source (generating the dataset)")
    src = Wire(f"src-{tag}", "--scale", str(scale))
    tgt = Wire(f"tgt-{tag}", "--target")
    want = src.digest()
    bson_bytes = sum(c["bytes"] for c in want)
    docs = sum(c["count"] for c in want)
    res = results.setdefault(tag, {"scale": scale, "documents": docs, "bson_bytes": bson_bytes,
                                   "snapshots": {}, "restores": {}, "bounds": {}})
    log(f"scale {scale:g}: {docs} documents, {bson_bytes / MIB:.1f} MiB of BSON")
    out_dir = os.path.join(WORK, f"out-{tag}")
    os.makedirs(out_dir, exist_ok=True)
    logs = os.path.join(WORK, "logs")
    os.makedirs(logs, exist_ok=True)
    kept = {}  # the outputs the restores read
    for rep in range(repeats):
        order = SNAPSHOTS if rep % 2 == 0 else list(reversed(SNAPSHOTS))
        for sid, desc, kind, args in order:
            out = os.path.join(out_dir, sid + (".archive" if kind == "mongodump" else ""))

            def attempt():
                shutil.rmtree(out, ignore_errors=True) if os.path.isdir(out) else None
                if os.path.exists(out):
                    os.unlink(out)
                if kind == "mongosnap":
                    os.makedirs(out, mode=0o750)
                m = ms.measure(sid, snapshot_argv(kind, args, src, out), os.path.join(logs, f"{tag}-{sid}-{rep}"),
                               servers=[("source", src.pid)])
                m["output_bytes"] = (os.path.getsize(out) if kind == "mongodump" else
                                     sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out)
                                         if not f.endswith(".json")))
                return m

            m = ms.least_contended(attempt, retries, log, max_wait)
            res["snapshots"].setdefault(sid, {"description": desc, "runs": []})["runs"].append(m)
            log(f"{tag} {sid}: {m['wall_s']:.2f}s, {bson_bytes / MIB / m['wall_s']:.0f} MiB/s, "
                f"cpu {m['cpu_s']}s, source cpu {m['source_cpu_s']}s, rss {m['max_rss_kib'] // 1024} MiB")
            if sid in ("md-plain", "ms-zstd-p4"):
                keep = os.path.join(out_dir, "keep-" + sid)
                if os.path.isdir(out):
                    shutil.rmtree(keep, ignore_errors=True)
                    shutil.copytree(out, keep)
                else:
                    shutil.copyfile(out, keep)
                kept[sid] = keep
            elif os.path.isdir(out):
                shutil.rmtree(out)
            elif os.path.exists(out):
                os.unlink(out)
        for rid, desc, kind, args in (RESTORES if rep % 2 == 0 else list(reversed(RESTORES))):
            if kind == "mongorestore":
                argv = [os.path.join(TOOLS, "mongorestore"), "--uri", tgt.uri, f"--archive={kept['md-plain']}",
                        "--quiet", *args]
            else:
                argv = [WORKER, "restore", "--uri-file", tgt.uri_file, "--store", kept["ms-zstd-p4"],
                        "--snapshot", "bench", *args]

            def attempt():
                tgt.reset()
                m = ms.measure(rid, argv, os.path.join(logs, f"{tag}-{rid}-{rep}"), servers=[("target", tgt.pid)])
                got = tgt.digest()
                if got != want:
                    raise RuntimeError(f"{rid}: the target's digest differs from the source's:\n{got}\n{want}")
                m["verified"] = True
                return m

            m = ms.least_contended(attempt, retries, log, max_wait)
            res["restores"].setdefault(rid, {"description": desc, "runs": []})["runs"].append(m)
            log(f"{tag} {rid}: {m['wall_s']:.2f}s, {bson_bytes / MIB / m['wall_s']:.0f} MiB/s, cpu {m['cpu_s']}s, "
                f"target cpu {m['target_cpu_s']}s, rss {m['max_rss_kib'] // 1024} MiB, digest equal")
    # The bound: the write chain alone over the plain archive, in memory, no server.
    for bid, desc, args in BOUNDS:
        ms.wait_quiet(max_wait)
        out = subprocess.run([BOUND, kept["md-plain"], "--repeats", str(max(3, repeats)), *args],
                             check=True, capture_output=True, text=True).stdout
        runs = [json.loads(line) for line in out.splitlines() if line.strip()]
        res["bounds"][bid] = {"description": desc, "runs": runs}
        log(f"{tag} bound {bid}: {statistics.median(r['mib_per_s'] for r in runs):.0f} MiB/s of archive")
    src.stop()
    tgt.stop()


def med(runs, key):
    return statistics.median(r[key] for r in runs)


def rng(runs, key, fmt="{:.2f}"):
    v = [r[key] for r in runs]
    s = fmt.format(statistics.median(v))
    return s if len(v) == 1 else f"{s} ({fmt.format(min(v))}–{fmt.format(max(v))})"


def machine_info():
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return {"cpus": os.cpu_count(), "cpu_model": cpu, "mem_gib": round(mem / GIB, 1),
            "kernel": platform.release(), "commit": commit + ("+changes" if dirty else ""),
            "mongo_tools": os.environ.get("MS_BENCH_MONGO_TOOLS_VERSION", "")}


def bound_of(sid):
    """The write chain a snapshot is measured against: the same compression at the same level
    (mongodump's plain archive against no compression, its gzip against gzip)."""
    if "l1" in sid:
        return "zstd-l1"
    if "zstd" in sid:
        return "zstd-l3"
    if "gzip" in sid:
        return "gzip"
    return "none"


def write_markdown(path, results, meta):
    lines = [f"Run of {meta['started']} ({meta['seconds']:.0f} s), {meta['machine']['cpus']} CPUs "
             f"({meta['machine']['cpu_model']}), {meta['machine']['mem_gib']} GiB, mongosnap "
             f"{meta['machine']['commit']}, release build; {meta['repeats']} repetition(s), medians with (min–max)."
             + (" QUICK RUN (scale 0.05, not for comparison)." if meta.get("quick") else ""),
             "\"Of its bound\": the snapshot's MiB/s of BSON over the write chain alone at the same "
             "compression (pipeline-bound, below; mongodump's plain archive against no compression).", ""]
    for tag, res in results.items():
        gib = res["bson_bytes"] / GIB
        mib = res["bson_bytes"] / MIB
        lines += [f"### Scale {res['scale']:g}: {res['documents']:,} documents, {mib:.1f} MiB of BSON", ""]
        lines += ["| snapshot | wall s | MiB/s of BSON | of its bound | CPU s | CPU s per GiB | peak RSS MiB | "
                  "source CPU s | other CPU s | output / BSON |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for sid, s in res["snapshots"].items():
            runs = s["runs"]
            w = med(runs, "wall_s")
            bid = bound_of(sid)
            bound = med(res["bounds"][bid]["runs"], "mib_per_s") if bid in res["bounds"] else None
            frac = f"{mib / w / bound:.2f}" if bound else ""
            lines.append(f"| {s['description']} | {rng(runs, 'wall_s')} | {mib / w:.0f} | {frac} | "
                         f"{rng(runs, 'cpu_s')} | {med(runs, 'cpu_s') / gib:.2f} | {med(runs, 'max_rss_kib') / 1024:.0f} | "
                         f"{rng(runs, 'source_cpu_s')} | {med(runs, 'other_cpu_s'):.1f} | "
                         f"{med(runs, 'output_bytes') / res['bson_bytes']:.3f} |")
        lines += ["", "| restore | wall s | MiB/s of BSON | CPU s | CPU s per GiB | peak RSS MiB | target CPU s | "
                  "other CPU s | checked |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for rid, r in res["restores"].items():
            runs = r["runs"]
            w = med(runs, "wall_s")
            lines.append(f"| {r['description']} | {rng(runs, 'wall_s')} | {mib / w:.0f} | {rng(runs, 'cpu_s')} | "
                         f"{med(runs, 'cpu_s') / gib:.2f} | {med(runs, 'max_rss_kib') / 1024:.0f} | "
                         f"{rng(runs, 'target_cpu_s')} | {med(runs, 'other_cpu_s'):.1f} | digest equal ×{len(runs)} |")
        lines += ["", "| the write chain alone (bench/pipeline-bound, archive in memory) | MiB/s of archive | CPU s |",
                  "|---|---:|---:|"]
        for bid, b in res["bounds"].items():
            lines.append(f"| {b['description']} | {rng(b['runs'], 'mib_per_s', '{:.0f}')} | {med(b['runs'], 'cpu_s'):.2f} |")
        lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(prog="bench/tool-bench")
    ap.add_argument("--scales", default="1,4")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--retries", type=int, default=2)
    ap.add_argument("--max-wait", type=float, default=180)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "results"))
    ap.add_argument("--from-json", help="only write the Markdown of an earlier run's JSON")
    a = ap.parse_args()
    if a.from_json:
        with open(a.from_json) as f:
            d = json.load(f)
        print(write_markdown(a.from_json[: -len(".json")] + ".md", d["results"], d["meta"]))
        return
    scales = [float(s) for s in a.scales.split(",")]
    if a.quick:
        scales, a.repeats, a.max_wait, a.retries = [0.05], 1, 0, 0
    started = datetime.datetime.now(datetime.timezone.utc)
    results = {}
    for s in scales:
        run_scale(s, a.repeats, a.retries, a.max_wait, results)
    meta = {"started": started.strftime("%Y-%m-%d %H:%M UTC"), "seconds": time.monotonic() - T0,
            "repeats": a.repeats, "quick": a.quick, "machine": machine_info()}
    os.makedirs(a.out, exist_ok=True)
    stem = f"tool-{started:%Y%m%d}" + ("-quick" if a.quick else "")
    with open(os.path.join(a.out, stem + ".json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    print(write_markdown(os.path.join(a.out, stem + ".md"), results, meta))


if __name__ == "__main__":
    main()
