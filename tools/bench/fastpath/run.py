#!/usr/bin/python3
"""The kernel fast-path benchmark: connect + first byte latency and
connections per second to the same pods by every path, in one run.

Creates (and removes) a network namespace with the pods and a VIP on lo, a
cgroup v2 folder and a private bpffs; starts $BUILD/bench-fastpath serve (a
trivial C HTTP/1.1 responder, so the network path is what is measured, not
a model server) on three pod addresses and kepp with --kernel=on --fastpath
VIP:80=m --cgroup CG; then, with $BUILD/bench-fastpath load (a C epoll
client; one connection per small POST /v1/completions, Connection: close):

  direct      client outside the cgroup -> one pod (the limit)
  direct-cg   client in the cgroup -> one pod (the cost of kepp's cgroup
              programs on traffic that is not to a VIP)
  fastpath    client in the cgroup -> the VIP (connect4 steers it to a pod)
  proxy       client outside the cgroup -> the VIP (sk_lookup hands it to
              kepp's userspace fallback proxy, which schedules and forwards)

Each round runs every path twice: one connection at a time (latency) and
--concurrency at a time for --duration (connections per second); the order
of the paths rotates between rounds and the tables show the median of the
rounds. Checks along the way (exit 1 when one fails): no errors, fast-path
answers come from the pods and not through the proxy, proxy answers carry
Via: 1.1 kepp, kepp's connect verdicts count the steered connections.

  BUILD=build /usr/bin/python3 tools/bench/fastpath/run.py            # ~1 minute (5 rounds)
  BUILD=build /usr/bin/python3 tools/bench/fastpath/run.py --smoke    # ~8 s
  ... run.py --rounds 5 --duration 5 --concurrency 32 --json /tmp/fp.json
  ... run.py --bpf-stats   # also what each kepp BPF program costs per connection

--bpf-stats turns on kernel.bpf_stats_enabled (machine-wide) for one extra
run per path and restores it: run_cnt and run_time_ns of kepp's programs.

Needs root (netns, cgroup, bpffs, BPF). Build first: make BUILD=$BUILD.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
VIP, VIP_PORT = "10.79.1.1", 80
PODS = ["10.79.0.1", "10.79.0.2", "10.79.0.3"]
POD_PORT = 8000
PATHS = ["direct", "direct-cg", "fastpath", "proxy"]


class BenchError(Exception):
    pass


def run(*cmd, check=True):
    p = subprocess.run(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if check and p.returncode != 0:
        raise BenchError("%s: exit %d: %s" % (" ".join(cmd), p.returncode,
                                              p.stderr.decode(errors="replace")))
    return p.stdout.decode(errors="replace")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cgroup2_root():
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            if parts[2] == "cgroup2":
                return parts[1]
    raise BenchError("no cgroup2 mount")


class Bench:
    def __init__(self, build_dir):
        self.build = build_dir
        tag = "%d" % os.getpid()
        self.ns = "kepp-fpb-" + tag
        self.cg = os.path.join(cgroup2_root(), "kepp-fpb-" + tag)
        self.tmp = tempfile.mkdtemp(prefix="kepp-fpb-")
        self.bpffs = os.path.join(self.tmp, "bpffs")
        self.procs = []
        self.kepp = None

    def bin(self, name):
        path = os.path.join(self.build, name)
        if not os.access(path, os.X_OK):
            raise BenchError("%s is missing: make BUILD=%s first" % (path, self.build))
        return path

    def __enter__(self):
        why = None
        if os.geteuid() != 0:
            why = "not root"
        elif not shutil.which("nsenter"):
            why = "nsenter missing"
        if why:
            raise BenchError("the fast-path benchmark cannot run (%s)" % why)
        try:
            run("ip", "netns", "add", self.ns)
            run("ip", "-n", self.ns, "link", "set", "lo", "up")
            for ip in PODS + [VIP]:
                run("ip", "-n", self.ns, "addr", "add", ip + "/32", "dev", "lo")
            # Tens of thousands of short connections per run: the whole port
            # range, and ports in TIME_WAIT reused (both per netns).
            run(*self.nsenter(), "sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=1024 65535")
            run(*self.nsenter(), "sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1")
            os.mkdir(self.bpffs)
            run("mount", "-t", "bpf", "bpf", self.bpffs)
            os.mkdir(self.cg)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if os.path.ismount(self.bpffs):
            shutil.rmtree(os.path.join(self.bpffs, "kepp"), ignore_errors=True)
            run("umount", self.bpffs, check=False)
        if os.path.isdir(self.cg):
            for _ in range(50):
                try:
                    os.rmdir(self.cg)
                    break
                except OSError:
                    time.sleep(0.05)
        run("ip", "netns", "del", self.ns, check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def nsenter(self):
        return ["nsenter", "--net=/run/netns/" + self.ns]

    def spawn(self, args, cgroup=False, **kw):
        def join():
            with open(os.path.join(self.cg, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        p = subprocess.Popen(self.nsenter() + args, preexec_fn=join if cgroup else None,
                             stdin=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def start(self):
        pods = ["%s:%d" % (ip, POD_PORT) for ip in PODS]
        p = self.spawn([self.bin("bench-fastpath"), "serve"] + pods, stdout=subprocess.PIPE)
        if p.stdout.readline().strip() != b"ready":
            raise BenchError("bench-fastpath serve did not start")
        self.kepp_log = os.path.join(self.tmp, "kepp.log")
        log = open(self.kepp_log, "wb")
        self.kepp = self.spawn(
            [self.bin("kepp"), "--secure-serving=false", "--kernel=on", "--workers", "1",
             "--grpc-port", str(free_port()), "--grpc-health-port", str(free_port()),
             "--metrics-port", str(free_port()), "--endpoints", ",".join(pods),
             "--fastpath", "%s:%d=m" % (VIP, VIP_PORT), "--bpffs", self.bpffs,
             "--cgroup", self.cg], stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.time() + 15
        while True:
            # Scored and published: three pods with a weight each.
            try:
                fp = self.fastpath()
                svcs = fp["services"]
                if svcs and len(svcs[0]["backends"]) == 3 and all(
                        b["weight"] > 0 for b in svcs[0]["backends"]):
                    return
            except BenchError:
                pass
            if self.kepp.poll() is not None or time.time() > deadline:
                with open(self.kepp_log, errors="replace") as f:
                    raise BenchError("kepp did not publish a fast-path table:\n" + f.read())
            time.sleep(0.1)

    def fastpath(self):
        """keppctl's view of the pinned maps."""
        return json.loads(run(self.bin("keppctl"), "fastpath", "--bpffs", self.bpffs, "--json"))

    def load(self, path, concurrency, conns=0, duration=0.0):
        target = {"direct": "%s:%d" % (PODS[0], POD_PORT),
                  "direct-cg": "%s:%d" % (PODS[0], POD_PORT)}.get(path, "%s:%d" % (VIP, VIP_PORT))
        args = [self.bin("bench-fastpath"), "load", "--target", target,
                "--concurrency", str(concurrency)]
        if conns:
            args += ["--conns", str(conns)]
        if duration:
            args += ["--duration", str(duration)]
        p = self.spawn(args, cgroup=path in ("direct-cg", "fastpath"),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = p.communicate(timeout=120 + duration)
        if p.returncode != 0:
            raise BenchError("bench-fastpath load (%s): exit %d: %s" % (
                path, p.returncode, err.decode(errors="replace")))
        r = json.loads(out.decode())
        r["path"] = path
        check_run(r)
        return r


def prog_stats():
    """run_cnt and run_time_ns of every loaded kepp_* program."""
    out = {}
    for p in json.loads(run("bpftool", "-j", "prog", "show")):
        if p.get("name", "").startswith("kepp_"):
            c, t = out.get(p["name"], (0, 0))
            out[p["name"]] = (c + p.get("run_cnt", 0), t + p.get("run_time_ns", 0))
    return out


def bpf_costs(b, conns):
    """Per path: each kepp program's runs and ns per connection, one at a time."""
    path = "/proc/sys/kernel/bpf_stats_enabled"
    with open(path) as f:
        old = f.read().strip()
    out = {}
    try:
        with open(path, "w") as f:
            f.write("1")
        for p in PATHS:
            s0 = prog_stats()
            n = b.load(p, 1, conns=conns)["conns"]
            s1 = prog_stats()
            out[p] = {}
            for name, (c1, t1) in sorted(s1.items()):
                c0, t0 = s0.get(name, (0, 0))
                if c1 > c0:
                    out[p][name] = {"runs_per_conn": (c1 - c0) / n,
                                    "ns_per_run": (t1 - t0) / (c1 - c0),
                                    "ns_per_conn": (t1 - t0) / n}
    finally:
        with open(path, "w") as f:
            f.write(old)
    return out


def print_bpf(bpf):
    print("\n### kepp's BPF programs per connection (kernel.bpf_stats_enabled)\n")
    print("| path | program | runs/conn | ns/run | ns/conn |")
    print("|---|---|---:|---:|---:|")
    for p in PATHS:
        for name, v in bpf[p].items():
            print("| %s | %s | %.2f | %.0f | %.0f |" % (
                p, name, v["runs_per_conn"], v["ns_per_run"], v["ns_per_conn"]))
        print("| %s | **total** | | | %.0f |" % (p, sum(v["ns_per_conn"] for v in bpf[p].values())))


def check_run(r):
    what = "%s (concurrency %d)" % (r["path"], r["concurrency"])
    if r["conns"] == 0 or r["errors"]:
        raise BenchError("%s: %d connections, %d errors (first: %s)" % (
            what, r["conns"], r["errors"], r["first_error"]))
    pods = set("%s:%d" % (ip, POD_PORT) for ip in PODS)
    if not set(r["served_by"]) <= pods or sum(r["served_by"].values()) != r["conns"]:
        raise BenchError("%s: answers not from the pods: %r" % (what, r["served_by"]))
    want_proxy = r["conns"] if r["path"] == "proxy" else 0
    if r["via_kepp"] != want_proxy:
        raise BenchError("%s: %d of %d answers through kepp's proxy, want %d" % (
            what, r["via_kepp"], r["conns"], want_proxy))


def median(runs, key):
    return statistics.median(r[key] for r in runs)


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.environ.get("BUILD", "build"))
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--latency-conns", type=int, default=1500,
                    help="connections one at a time per path and round")
    ap.add_argument("--duration", type=float, default=1.0,
                    help="seconds of the connections-per-second run per path and round")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--bpf-stats", action="store_true",
                    help="measure kepp's BPF programs per connection (kernel.bpf_stats_enabled)")
    ap.add_argument("--smoke", action="store_true", help="one short round (the test's run)")
    ap.add_argument("--json", help="write every run and the summary here")
    a = ap.parse_args()
    if a.smoke:
        a.rounds, a.latency_conns, a.duration = 1, 300, 0.5
    build = a.build if os.path.isabs(a.build) else os.path.join(ROOT, a.build)
    runs = []
    t0 = time.time()
    load0 = loadavg()
    try:
        with Bench(build) as b:
            b.start()
            v0 = b.fastpath()["verdicts"]["picked"]
            steered = 0
            for rnd in range(a.rounds):
                order = PATHS[rnd % len(PATHS):] + PATHS[:rnd % len(PATHS)]
                for path in order:
                    for conc, kw in ((1, {"conns": a.latency_conns}),
                                     (a.concurrency, {"duration": a.duration})):
                        r = b.load(path, conc, **kw)
                        r["round"] = rnd
                        runs.append(r)
                        if path == "fastpath":
                            steered += r["conns"]
            bpf = bpf_costs(b, a.latency_conns) if a.bpf_stats else None
            fp = b.fastpath()
            picked = fp["verdicts"]["picked"] - v0
            if picked < steered:
                raise BenchError("connect verdicts: %d picked for %d fast-path connections"
                                 % (picked, steered))
            backends = fp["services"][0]["backends"]
    except BenchError as e:
        print("bench-fastpath: %s" % e, file=sys.stderr)
        return 1
    secs = time.time() - t0
    summary = summarize(runs, a)
    print_tables(summary, a, secs, load0, loadavg(), backends)
    if bpf:
        print_bpf(bpf)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"runs": runs, "summary": summary, "bpf": bpf, "seconds": secs}, f,
                      indent=1)
    return 0


def summarize(runs, a):
    out = {}
    for path in PATHS:
        lat = [r for r in runs if r["path"] == path and r["concurrency"] == 1]
        cps = [r for r in runs if r["path"] == path and r["concurrency"] == a.concurrency]
        out[path] = {
            "p50_us": median(lat, "first_p50_us"), "p90_us": median(lat, "first_p90_us"),
            "p99_us": median(lat, "first_p99_us"), "total_p50_us": median(lat, "total_p50_us"),
            "cps1": median(lat, "cps"), "cps": median(cps, "cps"),
            "cps_min": min(r["cps"] for r in cps), "cps_max": max(r["cps"] for r in cps),
            "conc_p50_us": median(cps, "first_p50_us"), "conc_p99_us": median(cps, "first_p99_us"),
            "cpu1": median(lat, "cpu_us_per_conn"), "cpu": median(cps, "cpu_us_per_conn"),
            "conns": sum(r["conns"] for r in lat + cps),
        }
    d, f, p = out["direct"], out["fastpath"], out["proxy"]
    out["goals"] = {
        "fastpath_p50_vs_direct": f["p50_us"] / d["p50_us"],
        "fastpath_cps_vs_direct": f["cps"] / d["cps"],
        "fastpath_cpu_vs_direct": f["cpu"] / d["cpu"],
        "fastpath_p50_vs_proxy": f["p50_us"] / p["p50_us"],
        "fastpath_cps_vs_proxy": f["cps"] / p["cps"],
    }
    return out


def print_tables(s, a, secs, load0, load1, backends):
    print("### Connect + first byte, one connection at a time (median of %d rounds x %d "
          "connections)\n" % (a.rounds, a.latency_conns))
    print("| path | p50 us | p90 us | p99 us | whole exchange p50 us | conn/s | client CPU us/conn "
          "| p50 vs direct |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for path in PATHS:
        r = s[path]
        print("| %s | %d | %d | %d | %d | %.0f | %.1f | %.2fx |" % (
            path, r["p50_us"], r["p90_us"], r["p99_us"], r["total_p50_us"], r["cps1"],
            r["cpu1"], r["p50_us"] / s["direct"]["p50_us"]))
    print("\n### Connections per second, %d at a time (median of %d rounds x %.1f s)\n"
          % (a.concurrency, a.rounds, a.duration))
    print("| path | conn/s | min - max | first byte p50 us | p99 us | client CPU us/conn "
          "| conn/s vs direct |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for path in PATHS:
        r = s[path]
        print("| %s | %.0f | %.0f - %.0f | %d | %d | %.1f | %.2fx |" % (
            path, r["cps"], r["cps_min"], r["cps_max"], r["conc_p50_us"], r["conc_p99_us"],
            r["cpu"], r["cps"] / s["direct"]["cps"]))
    g = s["goals"]
    ok1 = g["fastpath_p50_vs_direct"] <= 1.10 and g["fastpath_cps_vs_direct"] >= 0.90
    ok2 = g["fastpath_p50_vs_proxy"] < 0.8 and g["fastpath_cps_vs_proxy"] > 1.25
    print("\n### Goals\n")
    print("- fast path within 10%% of direct: p50 %.2fx, conn/s %.2fx: **%s** (client CPU per "
          "connection %.2fx)" % (g["fastpath_p50_vs_direct"], g["fastpath_cps_vs_direct"],
                                 "met" if ok1 else "missed", g["fastpath_cpu_vs_direct"]))
    print("- fast path well ahead of the proxy: p50 %.2fx, conn/s %.2fx of the proxy's: **%s**" % (
        g["fastpath_p50_vs_proxy"], g["fastpath_cps_vs_proxy"], "met" if ok2 else "missed"))
    print("\nkepp's table after the run (keppctl fastpath): %s" % ", ".join(
        "%s weight %d, %d connects" % (be["addr"], be["weight"], be["connects"])
        for be in backends))
    print("%d connections in %.0f s; load average %.1f at the start, %.1f at the end" % (
        sum(s[p]["conns"] for p in PATHS), secs, load0, load1))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    sys.exit(main())
