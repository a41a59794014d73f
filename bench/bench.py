#!/usr/bin/env python3
"""lockrun benchmarks, side by side with flock(1) in the same run.

Prints, for each backend asked for:
  - the uncontended cycle `lockrun <res> -- true` (median of N runs) next to `flock FILE true`,
    the two run alternately so that both see the same machine (`etcdctl lock` likewise);
  - 8 workers x 25 iterations of contention on one resource: total time, throughput, and the
    median handoff (one holder's command ending to the next holder's command starting); the
    medians of --rounds runs, each backend's alternating with flock's (and etcdctl's), so that
    every ratio to flock(1) is taken against flock(1) runs made alongside, minutes apart at most;
  - the resident memory of a `lockrun run` holding a lease while its child sleeps.

Usage: bench/bench.py [--runs N] [--rounds N]
                      [--servers redis,postgres,etcd,dynamodb,memcached,pgbouncer,pg-durable]
                      [--backend URL ...] [--binary PATH]
--servers starts the named servers itself, on free loopback ports in temporary directories, each
just before its rows and stopped right after them, so that no other server shares the machine
with the one measured (pgbouncer: PostgreSQL behind PgBouncer in transaction mode, the waiters
polling; pg-durable: a PostgreSQL that flushes every commit to disk, where the others do not);
--backend adds any URL you already have.
"""
import argparse
import glob
import os
import pwd
import signal
import socket
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cycle(cmd, runs, env):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, stdin=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


def cycle_pair(cmd_a, cmd_b, runs, env_a, env_b=None):
    """Medians and minimums of two commands run alternately (the order flipping every round), so
    that both see the same machine: on a shared VM the speed drifts by 10-15% within minutes."""
    times = ([], [])
    pair = ((cmd_a, env_a), (cmd_b, env_b or env_a))
    for i in range(runs):
        for k in ((0, 1) if i % 2 == 0 else (1, 0)):
            cmd, env = pair[k]
            t = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, stdin=subprocess.DEVNULL)
            times[k].append(time.perf_counter() - t)
    return [(statistics.median(ts), min(ts)) for ts in times]


def contention_rounds(cmds, rounds, workers, iters, envs, tmp, tag):
    """Runs the contention test of each command in `cmds` (name -> make_cmd) in turn, `rounds`
    times over, and returns name -> (median throughput, median handoff, overlaps, total time)."""
    got = {name: [] for name in cmds}
    for r in range(rounds):
        for name, make_cmd in cmds.items():
            stamps = os.path.join(tmp, f"{tag}-{name}-{r}.stamps".replace(" ", "_"))
            total, tput, hand, ov = contention(lambda: make_cmd(stamps), workers, iters, envs[name], stamps)
            got[name].append((tput, hand, ov, total))
    out = {}
    for name, runs in got.items():
        out[name] = (statistics.median(x[0] for x in runs), statistics.median(x[1] for x in runs),
                     sum(x[2] for x in runs), statistics.median(x[3] for x in runs))
    return out


def contention(make_cmd, workers, iters, env, stamp_file):
    """Each critical section appends 'start <ns>' and 'end <ns>' to stamp_file."""
    errors = []

    def worker():
        for _ in range(iters):
            r = subprocess.run(make_cmd(), env=env, stdin=subprocess.DEVNULL)
            if r.returncode != 0:
                errors.append(r.returncode)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    total = time.perf_counter() - t
    if errors:
        raise SystemExit(f"contention run failed: exit codes {sorted(set(errors))}")
    stamps = []
    with open(stamp_file) as f:
        for line in f:
            kind, ns = line.split()
            stamps.append((kind, int(ns)))
    handoffs = [b[1] - a[1] for a, b in zip(stamps, stamps[1:]) if a[0] == "end" and b[0] == "start"]
    overlaps = sum(1 for a, b in zip(stamps, stamps[1:]) if a[0] == b[0])
    return total, workers * iters / total, statistics.median(handoffs) / 1e6, overlaps


def rss_kib(cmd, env):
    p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        with open(f"/proc/{p.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    finally:
        p.terminate()
        p.wait()
    return -1


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, what, limit=30):
    end = time.time() + limit
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not start on port {port}")


def start_redis(tmp, procs):
    port = free_port()
    d = tempfile.mkdtemp(prefix="redis-", dir=tmp)
    procs.append(subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", d], stdout=subprocess.DEVNULL))
    wait_port(port, "redis-server")
    return f"redis://127.0.0.1:{port}/0"


def as_nobody(paths):
    """Servers that refuse to run as root (postgres, pgbouncer) run as `nobody` under root: gives
    it `paths` and returns the preexec_fn that drops to it (None when not root)."""
    if os.geteuid() != 0:
        return None
    nobody = pwd.getpwnam("nobody")
    for p in paths:
        os.chown(p, nobody.pw_uid, nobody.pw_gid)

    def demote():
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)
    return demote


# Servers started for the backend being measured (name -> URL); emptied when they are stopped.
STARTED = {}


def start_postgres(tmp, procs, durable=False):
    """Starts one PostgreSQL server per run (pgbouncer's backend is the same one). It commits
    without flushing (fsync and synchronous_commit off), as the tests' servers do; `durable`
    starts another that flushes every commit to disk, as a production server does."""
    name = "postgres-durable" if durable else "postgres"
    if name in STARTED:
        return STARTED[name]
    bindir = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
    d = tempfile.mkdtemp(prefix=name + "-", dir=tmp)
    if os.geteuid() == 0:
        os.chmod(tmp, 0o755)
    demote = as_nobody([d])
    subprocess.run([f"{bindir}/initdb", "-D", f"{d}/data", "-U", "postgres", "--auth=trust"],
                   check=True, stdout=subprocess.DEVNULL, preexec_fn=demote, env={**os.environ, "LC_ALL": "C"})
    port = free_port()
    flush = "on" if durable else "off"
    procs.append(subprocess.Popen([f"{bindir}/postgres", "-D", f"{d}/data", "-h", "127.0.0.1", "-p", str(port),
                                   "-k", d, "-c", f"fsync={flush}", "-c", f"synchronous_commit={flush}"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=demote))
    wait_port(port, "postgres")
    time.sleep(0.5)
    STARTED[name] = f"postgres://postgres@127.0.0.1:{port}/postgres"
    return STARTED[name]


def start_postgres_durable(tmp, procs):
    """PostgreSQL flushing every commit to this machine's disk (fsync and synchronous_commit on,
    the defaults). Returns the name of the [backend.pg-durable] section of a config file."""
    url = start_postgres(tmp, procs, durable=True)
    config = os.path.join(tmp, "pg-durable.toml")
    with open(config, "w") as f:
        f.write(f'[backend.pg-durable]\nurl = "{url}"\n')
    BACKEND_ENV["pg-durable"] = {"LOCKRUN_CONFIG": config}
    return "pg-durable"


# Extra environment for the backends that need a config file (name -> variables).
BACKEND_ENV = {}


def start_pgbouncer(tmp, procs):
    """PostgreSQL behind PgBouncer in transaction mode, as it is often deployed: the lockrun
    processes share a few server connections instead of each starting a server process. Waiters
    poll there (`listen = false`, as the README says for transaction poolers). Returns the name of
    the [backend.pgbouncer] section of a config file made for it."""
    pgbouncer = shutil.which("pgbouncer") or shutil.which("/usr/sbin/pgbouncer")
    if not pgbouncer:
        raise SystemExit("pgbouncer is not installed (apt-get install -y pgbouncer)")
    pg_port = int(start_postgres(tmp, procs).rsplit(":", 1)[1].split("/")[0])
    d = tempfile.mkdtemp(prefix="pgbouncer-", dir=tmp)
    port = free_port()
    with open(os.path.join(d, "users.txt"), "w") as f:
        f.write('"postgres" ""\n')
    with open(os.path.join(d, "pgbouncer.ini"), "w") as f:
        f.write(f"[databases]\npostgres = host=127.0.0.1 port={pg_port} dbname=postgres\n"
                f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
                f"auth_type = trust\nauth_file = {d}/users.txt\npool_mode = transaction\n"
                f"default_pool_size = 4\nmax_client_conn = 200\nlogfile = {d}/pgbouncer.log\n")
    demote = as_nobody([d, *(os.path.join(d, n) for n in os.listdir(d))])
    procs.append(subprocess.Popen([pgbouncer, os.path.join(d, "pgbouncer.ini")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=demote))
    wait_port(port, "pgbouncer")
    config = os.path.join(tmp, "pgbouncer.toml")
    with open(config, "w") as f:
        f.write(f'[backend.pgbouncer]\nurl = "postgres://postgres@127.0.0.1:{port}/postgres"\nlisten = false\n')
    BACKEND_ENV["pgbouncer"] = {"LOCKRUN_CONFIG": config}
    return "pgbouncer"


def start_etcd(tmp, procs):
    client, peer = free_port(), free_port()
    d = tempfile.mkdtemp(prefix="etcd-", dir=tmp)
    procs.append(subprocess.Popen(["etcd", "--data-dir", d, "--listen-client-urls", f"http://127.0.0.1:{client}",
                                   "--advertise-client-urls", f"http://127.0.0.1:{client}",
                                   "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                                   "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                                   "--initial-cluster", f"default=http://127.0.0.1:{peer}"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    wait_port(client, "etcd")
    return f"etcd://127.0.0.1:{client}"


# moto's server entry point with werkzeug's threading off: conditional writes are then atomic,
# as on DynamoDB (the same launcher as the tests', see tests/common/dynamodb.rs).
MOTO_LAUNCHER = """import sys
import moto.server as server
run = server.run_simple
server.run_simple = lambda *a, **k: run(*a, **dict(k, threaded=False))
server.main(sys.argv[1:])
"""

# Dummy credentials: the DynamoDB benchmark only ever talks to the local moto server.
AWS_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}


def start_dynamodb(tmp, procs):
    moto = shutil.which("moto_server")
    if not moto:
        raise SystemExit("moto_server is not installed (python3 -m pip install 'moto[server]')")
    with open(moto) as f:
        first = f.readline()
    python = first[2:].strip() if first.startswith("#!") and "python" in first and " " not in first[2:].strip() else "python3"
    port = free_port()
    d = tempfile.mkdtemp(prefix="moto-", dir=tmp)
    procs.append(subprocess.Popen([python, "-c", MOTO_LAUNCHER, "-H", "127.0.0.1", "-p", str(port)], cwd=d,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    wait_port(port, "moto_server")
    return f"dynamodb://lockrun-bench?endpoint=http://127.0.0.1:{port}&region=us-east-1"


def start_memcached(tmp, procs):
    port = free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    procs.append(subprocess.Popen(["memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0"] + user,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    wait_port(port, "memcached")
    return f"memcached://127.0.0.1:{port}"


# The contention test's critical section: a stamp as it starts and one as it ends.
STAMP_SH = 'echo "start $(date +%s%N)" >> {f}; echo "end $(date +%s%N)" >> {f}'



def clean_env(home):
    """The environment of every measured command: none of the user's lockrun or AWS settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCKRUN_", "AWS_"))}
    env["HOME"] = home
    env.update(AWS_ENV)
    return env


SERVERS = {"redis": start_redis, "postgres": start_postgres, "etcd": start_etcd, "dynamodb": start_dynamodb,
           "memcached": start_memcached, "pgbouncer": start_pgbouncer, "pg-durable": start_postgres_durable}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=200, help="runs for the uncontended median")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=25)
    ap.add_argument("--rounds", type=int, default=3,
                    help="contention runs per command, alternating, medians reported (DynamoDB: 1)")
    ap.add_argument("--backend", action="append", default=[], help="backend URL (repeatable); default: a file backend in a temp dir")
    ap.add_argument("--binary", help="the lockrun to measure; default: build it with scripts/build-release "
                    "(the binary scripts/install installs: static on Linux with glibc)")
    ap.add_argument("--servers", default="", help="comma-separated servers to start: " + ",".join(SERVERS))
    args = ap.parse_args()
    procs = []
    try:
        run(args, procs)
    finally:
        stop(procs)


def build_release():
    """Builds the binary scripts/install installs (scripts/build-release) and returns its path."""
    out = subprocess.run([os.path.join(ROOT, "scripts", "build-release")], cwd=ROOT, check=True,
                         stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()[-1]
    return os.path.join(ROOT, out)


def elf_linkage(path):
    """'dynamic' when the ELF executable names a program interpreter (PT_INTERP), else 'static'."""
    import struct
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:
            return "?"
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    types = [struct.unpack_from("<I", table, i * phentsize)[0] for i in range(phnum)]
    return "dynamic" if 3 in types else "static"


def measure(args, rows, name, url, env, first, flock_cycle, flock_cmd, lockrun_cmd, contention_row, rounds, tmp):
    """The rows of one backend: its uncontended cycle alternating with flock(1)'s, its contention
    rounds alternating with flock(1)'s (and etcdctl's), and its RSS while holding a lease."""
    res = f"bench-{os.getpid()}"
    if name == "dynamodb":
        # The table is created once, as an operator would (`lockrun init`).
        subprocess.run([args.binary, "-q", "-b", url, "init"], env=env, check=True, stdin=subprocess.DEVNULL)
    # The uncontended cycle, alternating with flock's.
    (med, best), (f_med, f_best) = cycle_pair(
        [args.binary, "-q", "-b", url, res, "--", "true"], flock_cycle, args.runs, env)
    if first:
        rows.append(("flock(1)", "uncontended cycle", f"{f_med * 1e3:.2f} ms median ({f_best * 1e3:.2f} min)"))
    rows.append((f"lockrun {name}", "uncontended cycle",
                 f"{med * 1e3:.2f} ms median ({best * 1e3:.2f} min), {med / f_med:.2f}x flock "
                 f"({f_med * 1e3:.2f} ms alongside)"))
    # Contention, in rounds alternating with flock's.
    cmds = {"flock": flock_cmd, name: lockrun_cmd(url, res + "-c")}
    envs = {"flock": env, name: env}
    if name == "etcd":
        # First come, first served: waiters queue, and a release wakes only the next one.
        cmds["fair"] = lockrun_cmd(url, res + "-f", "--fair")
        envs["fair"] = env
        if shutil.which("etcdctl"):
            endpoint = url.split("://", 1)[1]
            ectl = ["etcdctl", f"--endpoints={endpoint}", "lock"]
            stamp_sh = STAMP_SH
            cmds["etcdctl"] = lambda stamps: ectl + [res + "-ec", "--", "sh", "-c", stamp_sh.format(f=stamps)]
            envs["etcdctl"] = {**env, "ETCDCTL_API": "3"}
    n = 1 if name == "dynamodb" else rounds
    figs = contention_rounds(cmds, n, args.workers, args.iterations, envs, tmp, name)
    flock_fig = figs.pop("flock")
    if first:
        contention_row("flock(1)", flock_fig)
        rows.insert(1, rows.pop())  # flock's rows first
    contention_row(f"lockrun {name}", figs[name], flock_fig[0])
    if "fair" in figs:
        contention_row(f"lockrun {name} --fair", figs["fair"], flock_fig[0])
    kib = rss_kib([args.binary, "-b", url, res + "-rss", "--", "sleep", "3"], env)
    rows.append((f"lockrun {name}", "RSS while holding", f"{kib / 1024:.1f} MiB"))
    if "etcdctl" in figs:
        e_env = envs["etcdctl"]
        (med_e, best_e), (med_l, _) = cycle_pair(
            ectl + [res + "-e", "true"], [args.binary, "-q", "-b", url, res, "--", "true"], args.runs, e_env, env)
        rows.append(("etcdctl lock", "uncontended cycle",
                     f"{med_e * 1e3:.2f} ms median ({best_e * 1e3:.2f} min); lockrun is {med_l / med_e:.2f}x "
                     f"({med_l * 1e3:.2f} ms alongside)"))
        tput_e = figs["etcdctl"][0]
        contention_row("etcdctl lock", figs["etcdctl"])
        rows[-1] = (rows[-1][0], rows[-1][1], rows[-1][2] +
                    f"; lockrun is {figs[name][0] / tput_e:.2f}x, --fair {figs['fair'][0] / tput_e:.2f}x")


def stop(procs):
    """Stops the servers in `procs` and forgets them."""
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    procs.clear()
    STARTED.clear()


def run(args, procs):
    if args.binary is None:
        args.binary = build_release()
    linkage = elf_linkage(args.binary)
    flock = shutil.which("flock")
    tmp = tempfile.mkdtemp(prefix="lockrun-bench-")
    env = clean_env(tmp)
    # (name, URL or None, starter or None): a server is started just before its rows.
    backends = [("file", f"file://{tmp}/locks", None)]
    backends += [(url.split("://")[0], url, None) for url in args.backend]
    for name in filter(None, args.servers.split(",")):
        if name not in SERVERS:
            raise SystemExit(f"unknown server {name!r}; known: {','.join(SERVERS)}")
        backends.append((name, None, SERVERS[name]))
    stamp_sh = STAMP_SH

    print(f"lockrun benchmark  ({os.cpu_count()} cores, {args.runs} runs, {args.workers}x{args.iterations} contention "
          f"x {args.rounds} rounds; "
          f"{os.path.relpath(args.binary, ROOT)}, {linkage})")
    print()
    rows = []
    rounds = args.rounds
    if not flock:
        raise SystemExit("flock(1) is needed as the reference (package util-linux)")
    lockfile = os.path.join(tmp, "flock.lock")
    flock_cycle = [flock, lockfile, "true"]

    def flock_cmd(stamps):
        return [flock, lockfile, "sh", "-c", stamp_sh.format(f=stamps)]

    def lockrun_cmd(url, res, *opts):
        return lambda stamps: [args.binary, "-q", "-b", url, "run", *opts, res, "--", "sh", "-c",
                               stamp_sh.format(f=stamps)]

    def contention_row(who, fig, ref=None, ref_name="flock"):
        tput, hand, ov, total = fig
        ratio = f", {tput / ref:.2f}x {ref_name} ({ref:.0f} alongside)" if ref else ""
        rows.append((who, "contention", f"{tput:.0f} cycles/s ({total:.2f} s), median handoff {hand:.2f} ms, "
                                        f"overlaps {ov}{ratio}"))

    first = True
    base_env = env
    for name, url, starter in backends:
        try:
            if starter:
                url = starter(tmp, procs)
            measure(args, rows, name, url, {**base_env, **BACKEND_ENV.get(url, {})}, first, flock_cycle,
                    flock_cmd, lockrun_cmd, contention_row, rounds, tmp)
        finally:
            stop(procs)  # a server runs only while its own rows are measured
        first = False
    width = max(len(r[0]) for r in rows)
    for who, what, fig in rows:
        print(f"{who:<{width}}  {what:<18}  {fig}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
