#!/usr/bin/env python3
"""Where a contended handoff's time goes, step by step, for flock(1) and lockrun in the same run.

Runs bench.py's contention test (N workers, each critical section a `sh -c` that runs `date`
twice) for flock(1) and for each lockrun backend asked for, alternately, while `perf record -a`
records the kernel's scheduler events (process fork, exec and exit, wake-ups, context switches).
It then follows every handoff through the processes that make it up, from the last `date` of
one critical section exiting to the first `date` of the next one exiting (the times at which
`date` prints the stamps that bench.py's handoff is measured between), and prints the median and
mean of each step:

  command's last process exit -> its sh exits     the end of the critical section
  sh exits -> holder on a CPU                     the holder (flock or lockrun) is woken to reap
  command ended -> next holder woken              reap, release, and the waiter's wake-up
  next holder woken -> on a CPU                   how long the woken waiter waits for a CPU
  command ended -> next command spawned           all of the above plus grant and fork/clone
  spawn -> sh exec                                the child's steps before exec, and exec
  sh exec -> date exec                            sh starting, forking its subshell
  date exec -> date exit                          date starting and printing the stamp
  handoff                                         command's last exit -> next first date exit

No special build and no probes: it needs perf(1) with the sched tracepoints (root, or
kernel.perf_event_paranoid <= -1). The tracing itself slows each step by a few microseconds.

Usage: bench/handoff.py [--binary PATH] [--workers 8] [--cycles 200] [--rounds 1]
                        [--servers postgres,redis] [--backend URL ...]
"""
import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (bench.py beside this file: servers, contention test)

EVENTS = ("sched:sched_process_exec,sched:sched_process_exit,sched:sched_process_fork,"
          "sched:sched_switch,sched:sched_wakeup")
STEPS = [
    ("last exit -> sh exits", "sh_exit"),
    ("sh exits -> holder on a CPU", "holder_in"),
    ("command ended -> next holder woken", "woken"),
    ("next holder woken -> on a CPU", "woken_in"),
    ("command ended -> next spawned", "spawned"),
    ("spawn -> sh exec", "sh_exec"),
    ("sh exec -> date exec", "date_exec"),
    ("date exec -> date exit", "date_exit"),
    ("handoff", "handoff"),
]
LINE = re.compile(r"^\s*(.*?)\s+(\d+)/(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+sched:(\w+):\s+(.*)$")


def record(out, run):
    """Runs `run()` while `perf record -a` writes the scheduler events to `out`."""
    perf = subprocess.Popen(["perf", "record", "-q", "-a", "-e", EVENTS, "-o", out],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)  # perf opens its buffers
    if perf.poll() is not None:
        raise SystemExit("perf record failed: " + perf.stderr.read().decode().strip().splitlines()[-1])
    try:
        run()
    finally:
        perf.send_signal(signal.SIGINT)
        perf.wait()


def parse(data):
    script = subprocess.run(["perf", "script", "-i", data, "-F", "comm,pid,tid,cpu,time,event,trace"],
                            capture_output=True, text=True, check=True).stdout
    parent, execs, exits, forks, wakeups, switch_in = {}, {}, {}, {}, {}, {}
    for line in script.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        t, ev, rest = float(m.group(5)), m.group(6), m.group(7)
        if ev == "sched_process_fork":
            f = re.search(r" pid=(\d+) child_comm=.* child_pid=(\d+)", rest)
            p, c = int(f.group(1)), int(f.group(2))
            parent[c] = p
            forks.setdefault(p, []).append((t, c))
        elif ev == "sched_process_exec":
            f = re.search(r"filename=(\S+) pid=(\d+)", rest)
            execs[int(f.group(2))] = (t, f.group(1))
        elif ev == "sched_process_exit":
            exits.setdefault(int(re.search(r"pid=(\d+)", rest).group(1)), t)
        elif ev == "sched_wakeup":
            wakeups.setdefault(int(re.search(r"pid=(\d+)", rest).group(1)), []).append(t)
        elif ev == "sched_switch":
            switch_in.setdefault(int(re.search(r"next_pid=(\d+)", rest).group(1)), []).append(t)
    return parent, execs, exits, forks, wakeups, switch_in


def first_after(times, t):
    return next((x for x in times or [] if x >= t), None)


def steps(data):
    """Per-handoff step durations (seconds) from a perf recording."""
    parent, execs, exits, forks, wakeups, switch_in = parse(data)
    cycles = []
    for pid, (t, filename) in execs.items():
        holder = parent.get(pid)
        if not filename.endswith("/sh") or holder is None:
            continue
        dates = sorted((execs[c][0], c) for _, c in forks.get(pid, [])
                       if c in execs and execs[c][1].endswith("/date"))
        spawned = [ft for ft, c in forks.get(holder, []) if c == pid]
        if len(dates) == 2 and spawned and all(d in exits for _, d in dates) and pid in exits:
            cycles.append(dict(holder=holder, sh=pid, sh_exec=t, spawn=spawned[0],
                               d1=dates[0][1], d2=dates[1][1]))
    cycles.sort(key=lambda c: c["sh_exec"])
    out = []
    for a, b in zip(cycles, cycles[1:]):
        t0 = exits[a["d2"]]
        if b["spawn"] < t0:
            continue  # not a handoff from a to b (another run's cycle in between)
        woken = first_after(wakeups.get(b["holder"]), t0)
        holder_in = first_after(switch_in.get(a["holder"]), exits[a["sh"]])
        woken_in = first_after(switch_in.get(b["holder"]), woken) if woken else None
        out.append({
            "sh_exit": exits[a["sh"]] - t0,
            "holder_in": holder_in - exits[a["sh"]] if holder_in else None,
            "woken": woken - t0 if woken and woken < b["spawn"] else None,
            "woken_in": woken_in - woken if woken_in and woken_in < b["spawn"] else None,
            "spawned": b["spawn"] - t0,
            "sh_exec": b["sh_exec"] - b["spawn"],
            "date_exec": execs[b["d1"]][0] - b["sh_exec"],
            "date_exit": exits[b["d1"]] - execs[b["d1"]][0],
            "handoff": exits[b["d1"]] - t0,
        })
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", help="the lockrun to measure; default: build it with "
                    "scripts/build-release, as bench.py does")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--cycles", type=int, default=200, help="critical sections per run")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--servers", default="",
                    help="comma-separated servers to start: " + ",".join(bench.SERVERS))
    ap.add_argument("--backend", action="append", default=[], help="a backend URL you already have")
    args = ap.parse_args()
    if not shutil.which("perf"):
        raise SystemExit("perf(1) is needed (Debian: apt-get install linux-perf)")
    if not shutil.which("flock"):
        raise SystemExit("flock(1) is needed as the reference (package util-linux)")
    if args.binary is None:
        args.binary = bench.build_release()
    if not os.access(args.binary, os.X_OK):
        raise SystemExit(f"no lockrun binary at {args.binary}")
    procs = []
    tmp = tempfile.mkdtemp(prefix="lockrun-handoff-")
    try:
        env = bench.clean_env(tmp)
        urls = [f"file://{tmp}/locks"] + args.backend
        for name in filter(None, args.servers.split(",")):
            if name not in bench.SERVERS:
                raise SystemExit(f"--servers: unknown server '{name}' ({', '.join(bench.SERVERS)})")
            urls.append(bench.SERVERS[name](tmp, procs))
        subjects = {"flock(1)": lambda f: ["flock", f"{tmp}/flock.lock", "sh", "-c",
                                           bench.STAMP_SH.format(f=f)]}
        for url in urls:
            name = "lockrun " + url.split(":", 1)[0]
            subjects[name] = (lambda u: lambda f: [args.binary, "-q", "-b", u, "run", "handoff", "--",
                                                   "sh", "-c", bench.STAMP_SH.format(f=f)])(url)
        iters = max(1, args.cycles // args.workers)
        got = {name: [] for name in subjects}
        for r in range(args.rounds):
            order = list(subjects) if r % 2 == 0 else list(subjects)[::-1]
            for name in order:
                stamps = os.path.join(tmp, f"stamps-{r}-{len(got[name])}")
                data = os.path.join(tmp, f"perf-{r}.data")

                def run():
                    bench.contention(lambda: subjects[name](stamps), args.workers, iters, env,
                                     stamps)
                record(data, run)
                got[name].extend(steps(data))
                os.unlink(data)
        names = list(subjects)
        print(f"{args.workers} workers x {iters} cycles, {args.rounds} round(s); "
              "median (mean) in ms per handoff")
        print(f"{'step':38}" + "".join(f"{n:>22}" for n in names))
        for label, key in STEPS:
            cells = []
            for n in names:
                v = [h[key] for h in got[n] if h[key] is not None]
                cells.append(f"{statistics.median(v) * 1e3:.3f} ({statistics.mean(v) * 1e3:.3f})"
                             if v else "-")
            print(f"{label:38}" + "".join(f"{c:>22}" for c in cells))
        print(f"{'handoffs followed':38}" + "".join(f"{len(got[n]):>22}" for n in names))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
