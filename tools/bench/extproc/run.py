#!/usr/bin/python3
"""The ext_proc load benchmark: kepp against its own protocol floor, side by side.

Runs $BUILD/bench-extproc (an Envoy-role HTTP/2 load generator) against, in
the same run on the same machine:

  kepp-default  kepp with its default profile (queue, KV, prefix) over
                simulated endpoints with live metrics ($BUILD/sim)
  kepp-random   kepp with only the random picker (the cost of the protocol
                inside kepp)
  nullxp        $BUILD/bench-nullxp: kepp's HTTP/2 + gRPC stack answering a
                fixed endpoint (the floor)

and prints markdown tables: body sizes 1 KB / 16 KB / 256 KB / 1 MB with TLS
off and on, the decision latency at a fixed rate, endpoint counts 10 / 100 /
1000, RSS with 1,000 endpoints and 10,000 objectives, RSS over a long run,
when the headers response leaves for a 1 MB prompt uploaded at a bounded rate
and at full speed with --early-pick on and off ("early"), and the goals. Every
server runs with --workers 1 so the load generator has the other core of a
2-core machine.

  BUILD=build /usr/bin/python3 tools/bench/extproc/run.py            # ~7 minutes
  BUILD=build /usr/bin/python3 tools/bench/extproc/run.py --quick    # < 2 minutes
  ... run.py --only matrix,latency --json-out /tmp/xp.json
  ... run.py --profile     # perf hot spots and malloc calls per request of kepp

Build first: make BUILD=$BUILD (kepp, sim, bench-extproc, bench-nullxp).
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
BUILD = os.environ.get("BUILD", "build")
BUILD_DIR = BUILD if os.path.isabs(BUILD) else os.path.join(ROOT, BUILD)
CLK_TCK = os.sysconf("SC_CLK_TCK")

SIM_BASE = (127, 0, 2, 1)   # instance i on 127.0.2.1 + i (other tests use 127.0.1.x)
POOL = "bench-pool"
SIZES = [("1 KB", 1024), ("16 KB", 16384), ("256 KB", 262144), ("1 MB", 1048576)]
# Concurrency per size (4 connections x N streams): enough to keep one worker
# busy, few enough 1 MB bodies in flight that queueing does not hide the cost.
STREAMS = {1024: 16, 16384: 16, 262144: 4, 1048576: 2}
TARGETS = ["kepp-default", "kepp-random", "nullxp"]

RANDOM_CONFIG = """\
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: random-picker
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: random-picker
"""


def log(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sim_addr(i):
    n = (SIM_BASE[0] << 24 | SIM_BASE[1] << 16 | SIM_BASE[2] << 8 | SIM_BASE[3]) + i
    return "%d.%d.%d.%d" % (n >> 24, (n >> 16) & 255, (n >> 8) & 255, n & 255)


def wait_tcp(host, port, proc, what, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("%s exited with %d" % (what, proc.returncode))
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("%s never listened on %s:%d" % (what, host, port))


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])


def status_kb(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


class Proc:
    """A child process with its stderr in a file; stop() sends SIGTERM."""

    def __init__(self, name, args, tmp):
        self.name = name
        self.args = args
        self.err_path = os.path.join(tmp, name + ".stderr")
        self.err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.err)
        self.pid = self.proc.pid

    def stderr_tail(self, n=5):
        with open(self.err_path, "rb") as f:
            return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.err.close()
        return self.proc.returncode


class Bench:
    def __init__(self, args):
        self.a = args
        self.tmp = tempfile.mkdtemp(prefix="kepp-benchxp-")
        self.sim = None
        self.sim_port = None
        self.results = []
        self.idle = {}

    # -- processes --

    def start_sim(self, n):
        self.sim_port = free_port()
        self.sim = Proc("sim", [os.path.join(BUILD_DIR, "sim"), "--instances", str(n),
                                "--base-addr", sim_addr(0), "--port", str(self.sim_port)],
                        self.tmp)
        wait_tcp(sim_addr(n - 1), self.sim_port, self.sim.proc, "sim")

    def endpoints(self, n):
        return ",".join("%s:%d" % (sim_addr(i), self.sim_port) for i in range(n))

    def start_server(self, target, tls=False, n_eps=100, refresh=None, manifests=None,
                     extra=()):
        port = free_port()
        if target == "nullxp":
            args = [os.path.join(BUILD_DIR, "bench-nullxp"), "--port", str(port),
                    "--workers", "1", "--endpoint", "%s:%d" % (sim_addr(0), self.sim_port)]
            if tls:
                args.append("--tls")
        else:
            args = [os.path.join(BUILD_DIR, "kepp"), "--grpc-port", str(port),
                    "--grpc-health-port", str(free_port()), "--metrics-port", str(free_port()),
                    "--kernel=off", "--workers", "1",
                    "--secure-serving=%s" % ("true" if tls else "false"),
                    "--endpoints", self.endpoints(n_eps), "--pool-name", POOL]
            if refresh:
                args += ["--refresh-metrics-interval", refresh]
            if target == "kepp-random":
                args += ["--config-text", RANDOM_CONFIG]
            args += list(extra)
            if manifests:
                # kepp reads at most 1024 YAML documents per file: a folder of files.
                folder = os.path.join(self.tmp, "manifests")
                os.makedirs(folder, exist_ok=True)
                for i, text in enumerate(manifests):
                    with open(os.path.join(folder, "m%03d.yaml" % i), "w") as f:
                        f.write(text)
                args += ["--manifests", folder]
        p = Proc(target, args, self.tmp)
        p.port = port
        try:
            wait_tcp("127.0.0.1", port, p.proc, target, timeout=60)
        except RuntimeError as e:
            p.stop()
            raise RuntimeError("%s\n%s" % (e, p.stderr_tail()))
        time.sleep(0.5)  # first metric scrapes
        return p

    def stop_server(self, p):
        rc = p.stop()
        if rc != 0:
            log("warning: %s exited with %s: %s" % (p.name, rc, p.stderr_tail()))

    def idle_cpu(self, p, secs):
        """The server's CPU share with no load (kepp: metric scrapes)."""
        a = cpu_ticks(p.pid)
        time.sleep(secs)
        return (cpu_ticks(p.pid) - a) / CLK_TCK / secs

    def bench(self, p, label, body, tls=False, conns=4, streams=16, rate=None,
              duration=None, warmup=None, idle=0.0, extra=()):
        a = self.a
        args = [os.path.join(BUILD_DIR, "bench-extproc"), "--port", str(p.port),
                "--pid", str(p.pid), "--body", str(body), "--conns", str(conns),
                "--streams", str(streams), "--json", "--label", label,
                "--duration", str(duration or a.duration),
                "--warmup", str(a.warmup if warmup is None else warmup)]
        if tls:
            args.append("--tls")
        if rate:
            args += ["--rate", str(rate)]
        args += list(extra)
        out = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)
        if out.returncode != 0 and not out.stdout.strip():
            raise RuntimeError("bench-extproc failed (%d): %s\n%s" % (
                out.returncode, out.stderr.decode().strip(), p.stderr_tail()))
        r = json.loads(out.stdout.decode().strip().splitlines()[-1])
        r["target"] = p.name
        r["idle_cpu"] = idle
        r["load1"] = os.getloadavg()[0]  # other work on the machine during the run
        ok = r["ok"] or 0
        r["net_us"] = ((r["server_cpu_s"] - idle * float(duration or a.duration)) / ok * 1e6
                       if ok and r["server_cpu_s"] is not None else None)
        self.results.append(r)
        log("  %-13s %-34s %7.0f req/s  p99 %8.1f us  %7.1f us/req (worker %s)  errors %d  "
            "load %.2f" % (p.name, label, r["rps"] or 0, r["decision_us"]["p99"] or -1,
                           r["cpu_us_per_req"] or -1, fmt(r["worker_us_per_req"], 1),
                           r["errors"], r["load1"]))
        return r

    # -- sections --

    def matrix(self):
        sizes = SIZES if not self.a.quick else SIZES[:2] + SIZES[3:]
        out = {}
        for tls in (False, True):
            for target in TARGETS:
                p = self.start_server(target, tls=tls)
                idle = self.idle_cpu(p, self.a.idle)
                for name, size in sizes:
                    out[(tls, target, size)] = self.bench(
                        p, "%s %s" % (name, "TLS" if tls else "h2c"), size, tls=tls,
                        streams=STREAMS[size], idle=idle)
                self.stop_server(p)
        for tls in (False, True):
            print("\n### Body sizes, %s, closed loop (4 connections; 16 streams each at 1-16 KB, "
                  "4 at 256 KB, 2 at 1 MB), --workers 1\n" % ("TLS" if tls else "h2c"))
            print("| body | server | req/s | decision p50 / p90 / p99 / p99.9 (us) | "
                  "CPU us/req | worker us/req | worker vs nullxp | VmHWM MB | errors | load |")
            print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|")
            for name, size in sizes:
                null = out[(tls, "nullxp", size)]["worker_us_per_req"]
                for target in TARGETS:
                    r = out[(tls, target, size)]
                    d = r["decision_us"]
                    print(("| %s | %s | %s | %s / %s / %s / %s | %s | %s | %s | %.1f | %d "
                           "| %.1f |") % (
                        name, target, fmt(r["rps"], 0), fmt(d["p50"], 0), fmt(d["p90"], 0),
                        fmt(d["p99"], 0), fmt(d["p999"], 0), fmt(r["cpu_us_per_req"], 1),
                        fmt(r["worker_us_per_req"], 1),
                        ("%.2fx" % (r["worker_us_per_req"] / null))
                        if r["worker_us_per_req"] and null else "-",
                        r["hwm_kb"] / 1024.0, r["errors"], r["load1"]))
        return out

    def latency(self):
        rate = self.a.rate
        out = {}
        for target in TARGETS:
            p = self.start_server(target)
            idle = self.idle_cpu(p, self.a.idle)
            out[target] = self.bench(p, "1 KB at %d req/s" % rate, 1024, rate=rate,
                                     streams=64, idle=idle)
            self.stop_server(p)
        print("\n### Decision latency at %d req/s, open loop, 1 KB bodies, 100 endpoints, h2c, "
              "--workers 1\n" % rate)
        print("| server | req/s | decision p50 | p90 | p99 | p99.9 | max (us) | "
              "request p99 (ms) | server CPU % | worker us/req | errors | load |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for target in TARGETS:
            r = out[target]
            d = r["decision_us"]
            print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d | %.1f |" % (
                target, fmt(r["rps"], 0), fmt(d["p50"], 0), fmt(d["p90"], 0), fmt(d["p99"], 0),
                fmt(d["p999"], 0), fmt(d["max"], 0), fmt(r["total_ms"]["p99"], 2),
                fmt(r["server_cpu_pct"], 0), fmt(r["worker_us_per_req"], 1), r["errors"],
                r["load1"]))
        return out

    def early(self):
        """A 1 MB prompt in 64 KB body messages, one request at a time: paced
        (a client uploading 64 KB every 2 ms or 5 ms, as Envoy forwards the
        chunks as they come) and at full speed, with --early-pick on and off
        side by side."""
        uploads = [("64 KB / 5 ms", "64k", 5000), ("64 KB / 2 ms", "64k", 2000),
                   ("64 KB, full speed", "64k", 0), ("16 KB, full speed", "16k", 0)]
        if self.a.quick:
            uploads = uploads[1:3]
        out = {}
        for early in ("true", "false"):
            p = self.start_server("kepp-default", extra=["--early-pick=" + early])
            p.name = "kepp early-pick=" + early
            for label, chunk, pace in uploads:
                extra = ["--chunk", chunk] + (["--pace-us", str(pace)] if pace else [])
                out[(early, label)] = self.bench(p, "1 MB %s" % label, 1048576, conns=1,
                                                 streams=1, extra=extra)
            self.stop_server(p)
        print("\n### Early pick: a 1 MB prompt, one request at a time, 100 endpoints, h2c, "
              "--workers 1\n")
        print("Times after the first body message was handed to HTTP/2 (p50 over the run); "
              "*lead* is how long before the last body message the headers response came "
              "(negative: after it).\n")
        print("| upload | --early-pick | headers response (ms) | last body message (ms) | "
              "lead p50 (ms) | lead p1 (ms) | request p50 (ms) | worker us/req | req/s |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for label, _, _ in uploads:
            for early in ("true", "false"):
                r = out[(early, label)]
                print("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                    label, early, fmt(r["hdr_after_first_ms"]["p50"], 2),
                    fmt(r["last_after_first_ms"]["p50"], 2), fmt(r["hdr_lead_ms"]["p50"], 2),
                    fmt(r["hdr_lead_ms"]["p1"], 2), fmt(r["total_ms"]["p50"], 2),
                    fmt(r["worker_us_per_req"], 0), fmt(r["rps"], 0)))
        return out

    def endpoint_counts(self):
        out = {}
        counts = (10, 100, 1000)
        for n in counts:
            # The scrape rate is held at 2,000 endpoints/s: 50 ms up to 100
            # endpoints, 500 ms at 1,000 (scraping 1,000 every 50 ms would
            # take a core of this machine by itself).
            refresh = "%dms" % max(50, n // 2)
            for target in ("kepp-default", "kepp-random"):
                p = self.start_server(target, n_eps=n, refresh=refresh)
                idle = self.idle_cpu(p, self.a.idle)
                r = self.bench(p, "1 KB, %d endpoints" % n, 1024, idle=idle)
                r["refresh"] = refresh
                out[(n, target)] = r
                self.stop_server(p)
        print("\n### Endpoint counts, 1 KB bodies, h2c, closed loop 4 x 16, --workers 1\n")
        print("| endpoints | scrape every | server | req/s | decision p50 / p99 (us) | "
              "idle CPU % | CPU us/req | worker us/req | endpoints picked | VmHWM MB |")
        print("|---:|---|---|---:|---|---:|---:|---:|---:|---:|")
        for n in counts:
            for target in ("kepp-default", "kepp-random"):
                r = out[(n, target)]
                print("| %d | %s | %s | %s | %s / %s | %.1f | %s | %s | %d | %.1f |" % (
                    n, r["refresh"], target, fmt(r["rps"], 0), fmt(r["decision_us"]["p50"], 0),
                    fmt(r["decision_us"]["p99"], 0), r["idle_cpu"] * 100,
                    fmt(r["cpu_us_per_req"], 1), fmt(r["worker_us_per_req"], 1),
                    r["endpoints_picked"],
                    r["hwm_kb"] / 1024.0))
        return out

    def rss(self):
        n_obj = 10000
        docs = ["""apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: %s, namespace: default}
spec:
  selector: {matchLabels: {app: bench}}
  targetPorts: [{number: %d}]
  endpointPickerRef: {name: kepp, port: {number: 9002}}
""" % (POOL, self.sim_port)]
        for i in range(n_obj):
            docs.append("""apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceObjective
metadata: {name: obj-%d, namespace: default}
spec: {priority: %d, poolRef: {name: %s}}
""" % (i, i % 3, POOL))
        t = time.time()
        files = ["---\n".join(docs[i:i + 1000]) for i in range(0, len(docs), 1000)]
        p = self.start_server("kepp-default", n_eps=1000, refresh="500ms", manifests=files)
        startup = time.time() - t
        idle_kb = status_kb(p.pid, "VmRSS")
        idle = self.idle_cpu(p, self.a.idle)
        r = self.bench(p, "1 KB, 1000 eps, 10000 objectives", 1024, idle=idle,
                       extra=["--objectives", str(n_obj), "--response"])
        self.stop_server(p)
        print("\n### RSS with 1,000 endpoints and 10,000 InferenceObjectives "
              "(requests name one each; response phases on)\n")
        print("| start-up to listening (s) | VmRSS idle MB | VmHWM after load MB | req/s | "
              "decision p99 (us) | errors |")
        print("|---:|---:|---:|---:|---:|---:|")
        print("| %.1f | %.1f | %.1f | %s | %s | %d |" % (
            startup, idle_kb / 1024.0, r["hwm_kb"] / 1024.0, fmt(r["rps"], 0),
            fmt(r["decision_us"]["p99"], 0), r["errors"]))
        return r

    def long_run(self, unique):
        secs = self.a.long
        p = self.start_server("kepp-default")
        idle = self.idle_cpu(p, self.a.idle)
        what = "unique prompts" if unique else "256 prompts"
        extra = ["--rss-every", str(max(1.0, secs / 12.0)), "--response"]
        extra += ["--unique"] if unique else ["--variants", "256"]
        r = self.bench(p, "%ds at %d req/s, %s" % (secs, self.a.rate, what), 1024,
                       rate=self.a.rate, streams=64, duration=secs, warmup=2, idle=idle,
                       extra=extra)
        self.stop_server(p)
        series = [(t, kb) for t, kb in r["rss_series"] if t >= 2]
        print("\n### Long run: kepp-default, %d s at %d req/s, 1 KB, response phases on, %s\n"
              % (secs, self.a.rate, what))
        print("| t (s) | " + " | ".join("%.0f" % t for t, _ in series) + " |")
        print("|---|" + "---:|" * len(series))
        print("| VmRSS MB | " + " | ".join("%.1f" % (kb / 1024.0) for _, kb in series) + " |")
        whole = (series[-1][1] - series[0][1]) / 1024.0 if len(series) >= 2 else None
        half = [kb for t, kb in series if t >= series[-1][0] / 2]
        late = (half[-1] - half[0]) / 1024.0 if len(half) >= 2 else None
        print("\nVmRSS change: %s MB after warm-up, %s MB over the second half (%s requests, "
              "%d errors, decision p99 %s us)" % (fmt(whole, 2), fmt(late, 2), r["ok"],
                                                   r["errors"], fmt(r["decision_us"]["p99"], 0)))
        r["growth_mb"] = late
        r["unique"] = unique
        r["duration_s"] = secs
        return r

    def profile(self):
        """perf hot spots and malloc/free calls per request in kepp-default."""
        p = self.start_server("kepp-default")
        secs = self.a.duration
        data = os.path.join(self.tmp, "perf.data")
        rec = subprocess.Popen(["perf", "record", "-g", "-F", "1999", "-o", data, "-p",
                                str(p.pid), "--", "sleep", str(secs)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.bench(p, "1 KB under perf record", 1024, duration=secs, warmup=0)
        rec.wait()
        rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--stdio",
                              "--sort", "symbol", "--percent-limit", "0.7", "-g", "none"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        dso = subprocess.run(["perf", "report", "-i", data, "--no-children", "--stdio",
                              "--sort", "dso", "--percent-limit", "1", "-g", "none"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        print("\n### perf: kepp-default, 1 KB h2c closed loop (self time by symbol, then by "
              "object)\n")
        print("```")
        for out in (rep, dso):
            for line in out.stdout.decode("utf-8", "replace").splitlines():
                if line.strip() and not line.startswith("#"):
                    print(line.rstrip())
            print()
        print("```")
        self.stop_server(p)
        # Allocator calls: uprobes slow every call down, so a low rate, and
        # scrapes every 10 s so the control thread's calls hardly count.
        p = self.start_server("kepp-default", refresh="10s")
        libc = "/lib/x86_64-linux-gnu/libc.so.6"
        fns = ["malloc", "calloc", "realloc", "free"]
        for f in fns:  # one probe per call: perf probe refuses several -a at once here
            subprocess.run(["perf", "probe", "-q", "-x", libc, "-a", "bxp_%s=%s" % (f, f)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        events = ",".join("probe_libc:bxp_" + f for f in fns)
        try:
            counts = {}
            for phase in ("idle", "load"):
                st = subprocess.Popen(["perf", "stat", "-x", ",", "-e", events, "-p", str(p.pid),
                                       "--", "sleep", "3"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                if phase == "load":
                    r = self.bench(p, "1 KB at 500 req/s, malloc probes", 1024, rate=500,
                                   duration=2.5, warmup=0.25, streams=64)
                _, err = st.communicate()
                c = {}
                for line in err.decode().splitlines():
                    parts = line.split(",")
                    if len(parts) > 2 and parts[2].startswith("probe_libc:bxp_"):
                        c[parts[2].split("bxp_")[1]] = int(parts[0]) if parts[0].isdigit() else 0
                counts[phase] = c
            reqs = r["completed_total"]  # every request of the bench ran inside the 3 s
            print("\n### Allocator calls per request (kepp-default, 1 KB, uprobes on libc, "
                  "3 s windows, idle subtracted, scrapes every 10 s)\n")
            print("| call | idle / 3 s | under load / 3 s | per request |")
            print("|---|---:|---:|---:|")
            for f in fns:
                i, l = counts["idle"].get(f, 0), counts["load"].get(f, 0)
                print("| %s | %d | %d | %.1f |" % (f, i, l, (l - i) / reqs if reqs else 0))
            print("\n%d requests in the window" % reqs)
        finally:
            subprocess.run(["perf", "probe", "-q", "-d", "probe_libc:bxp_*"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.stop_server(p)

    def close(self):
        if self.sim:
            self.sim.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def fmt(v, digits):
    if v is None:
        return "-"
    return ("%%.%df" % digits) % v


def goals(m, lat, rss, long):
    print("\n### Goals\n")
    print("| goal | measured | met |")
    print("|---|---|---|")
    if m:
        for size in (1024, 16384):
            if (False, "kepp-default", size) not in m:
                continue
            for tls in (False, True):
                k = m[(tls, "kepp-default", size)]["worker_us_per_req"]
                n = m[(tls, "nullxp", size)]["worker_us_per_req"]
                ratio = k / n if k and n else None
                print("| decision CPU <= 1.3x nullxp, %d KB %s | %s vs %s us/req = %sx | %s |" % (
                    size // 1024, "TLS" if tls else "h2c", fmt(k, 1), fmt(n, 1),
                    fmt(ratio, 2), "yes" if ratio and ratio <= 1.3 else "no"))
        r = m[(False, "kepp-default", 1024)]
        print("| >= 20,000 req/s on one worker, 1 KB h2c | %s req/s | %s |" % (
            fmt(r["rps"], 0), "yes" if (r["rps"] or 0) >= 20000 else "no"))
    if lat:
        r = lat["kepp-default"]
        p99 = r["decision_us"]["p99"]
        print("| decision p99 < 200 us at %d req/s, 1 KB, 100 endpoints | %s us (%s req/s) | %s |"
              % (r["offered_rps"], fmt(p99, 0), fmt(r["rps"], 0),
                 "yes" if p99 is not None and p99 < 200 and r["errors"] == 0 else "no"))
    if rss:
        print("| RSS < 64 MB, 1,000 endpoints, 10,000 objectives | VmHWM %.1f MB | %s |" % (
            rss["hwm_kb"] / 1024.0, "yes" if rss["hwm_kb"] < 64 * 1024 else "no"))
    for r in long or ():
        g = r.get("growth_mb")
        # The index fills for ~10 s at 5,000 req/s before it levels off.
        met = "yes" if g is not None and g < 1.0 else "no"
        if r["unique"] and r["duration_s"] < 20:
            met = "too short to tell"
        print("| no RSS growth over a long run (%s) | %s MB over the second half | %s |" % (
            "unique prompts: the prefix index fills" if r["unique"] else "256 prompts",
            fmt(g, 2), met))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short runs, fewer cases (< 2 min)")
    ap.add_argument("--only", default="matrix,latency,endpoints,rss,long,early",
                    help="comma list of sections: matrix,latency,endpoints,rss,long,early,"
                    "profile")
    ap.add_argument("--profile", action="store_true", help="add the perf/malloc section")
    ap.add_argument("--duration", type=float, help="measured seconds per run")
    ap.add_argument("--long", type=int, help="seconds of the long run")
    ap.add_argument("--rate", type=int, default=5000, help="open-loop rate (5000)")
    ap.add_argument("--json-out", help="write every run's raw result here")
    a = ap.parse_args()
    a.duration = a.duration or (1.5 if a.quick else 4.0)
    a.warmup = 0.5 if a.quick else 1.0
    a.idle = 0.5 if a.quick else 2.0
    a.long = a.long or (6 if a.quick else 45)
    sections = set(a.only.split(","))
    if a.profile:
        sections.add("profile")
    for tool in ("kepp", "sim", "bench-extproc", "bench-nullxp"):
        if not os.access(os.path.join(BUILD_DIR, tool), os.X_OK):
            sys.exit("%s is missing: make BUILD=%s first" % (os.path.join(BUILD_DIR, tool), BUILD))

    b = Bench(a)
    t0 = time.time()
    print("## ext_proc load run: %s, %s, %d cores, load average %s" % (
        time.strftime("%Y-%m-%d %H:%M:%S %Z"), "quick" if a.quick else "default",
        os.cpu_count(), " ".join("%.2f" % x for x in os.getloadavg())))
    m = lat = rss = long = None
    try:
        b.start_sim(1000)
        if "matrix" in sections:
            m = b.matrix()
        if "latency" in sections:
            lat = b.latency()
        if "endpoints" in sections:
            b.endpoint_counts()
        if "rss" in sections:
            rss = b.rss()
        if "long" in sections:
            long = [b.long_run(False), b.long_run(True)]
        if "early" in sections:
            b.early()
        if "profile" in sections:
            b.profile()
        goals(m, lat, rss, long)
    finally:
        b.close()
        if a.json_out:
            with open(a.json_out, "w") as f:
                json.dump(b.results, f, indent=1)
    print("\n(%.0f s; load average at the end %s)" % (
        time.time() - t0, " ".join("%.2f" % x for x in os.getloadavg())))


if __name__ == "__main__":
    main()
