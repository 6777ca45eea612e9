#!/usr/bin/python3
"""kepp soak: mixed ext_proc load for a long time with faults injected at
random, then checks that nothing leaked and every request was answered.

Load: $BUILD/bench-extproc plays Envoy (open loop, request and response
phases, 1 KB to 16 KB bodies, four InferenceObjectives of which two are
sheddable) against kepp over $BUILD/sim pods. Faults, one every 0.5-2 s at
random: a pod's /metrics turns slow, failing, garbage or healthy again; a
client opens silent streams and vanishes; a client floods RST_STREAM; a
client connects and never speaks; the EndpointPickerConfig or the manifests
change (sometimes to something invalid, which kepp must refuse).

Checks at the end: no request failed (an ImmediateResponse such as 429 for a
sheddable request while pods look saturated is an answer; a reset stream, a
gRPC error or a wrong body is a failure); kepp's RSS over the second half of
the run grew less than --rss-slack; its open file descriptors, once the
faults stop, are what they were before them; kepp exits 0 on SIGTERM.

  make && make proto-py
  /usr/bin/python3 tools/soak/soak.py --duration 1800     # the 30-minute soak
  /usr/bin/python3 tools/soak/soak.py --smoke             # ~20 s (the test's run)
"""
import argparse
import ctypes
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIBC = ctypes.CDLL(None, use_errno=True)
SYS_PIDFD_GETFD = 438  # x86-64 and arm64 alike
PROCESS = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"
POOL = "soak-pool"

POOL_YAML = """\
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata:
  name: %s
  namespace: default
spec:
  selector:
    matchLabels:
      app: soak
  targetPorts:
  - number: %d
  endpointPickerRef:
    name: kepp
    port:
      number: 9002
"""

OBJECTIVE_YAML = """\
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceObjective
metadata:
  name: obj-%d
  namespace: default
spec:
  priority: %d
  poolRef:
    name: %s
"""


def example(name):
    """The text of a shipped deploy/examples/ file."""
    with open(os.path.join(ROOT, "deploy", "examples", name)) as f:
        return f.read()


# Config changes the soak makes: the shipped examples as they are, and one
# of its own (a random picker returning fallbacks).
CONFIGS = [
    None,  # the built-in default
    example("lora-config.yaml"),
    example("endpointpickerconfig.yaml"),
    """\
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- type: random-picker
  parameters: {maxNumOfEndpoints: 2}
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue-scorer
  - pluginRef: random-picker
""",
]
BAD_CONFIG = "apiVersion: inference.networking.x-k8s.io/v1alpha1\nkind: EndpointPickerConfig\n" \
             "plugins:\n- type: no-such-scorer\n"
DEFAULT_CONFIG = """\
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- type: kv-cache-utilization-scorer
- type: prefix-cache-scorer
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue-scorer
    weight: 2
  - pluginRef: kv-cache-utilization-scorer
    weight: 2
  - pluginRef: prefix-cache-scorer
    weight: 3
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def frame(ftype, flags, stream, payload=b""):
    return (len(payload).to_bytes(3, "big") + bytes([ftype, flags]) +
            stream.to_bytes(4, "big") + payload)


def literal(name, value):
    out = b"\x00"
    for part in (name.encode(), value.encode()):
        out += bytes([len(part)]) + part
    return out


HEADERS = b"".join(literal(k, v) for k, v in [
    (":method", "POST"), (":scheme", "http"), (":path", PROCESS), (":authority", "kepp"),
    ("content-type", "application/grpc"), ("te", "trailers")])
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(0x4, 0, 0)


def raw_client(port, payload, linger):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if payload:
            s.sendall(payload)
        time.sleep(linger)
        s.close()
    except OSError:
        pass  # refused or reset: the server defending itself is fine


class Soak:
    def __init__(self, args):
        self.args = args
        self.build = args.build if os.path.isabs(args.build) else os.path.join(ROOT, args.build)
        self.tmp = tempfile.mkdtemp(prefix="kepp-soak-")
        self.rng = random.Random(args.seed)
        self.events = {}
        self.fds = []
        self.stop = threading.Event()
        self.sim = self.kepp = None

    def count(self, what):
        self.events[what] = self.events.get(what, 0) + 1

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        tmp = path + ".new"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)  # kepp never reads half a file
        return path

    def manifests(self, priorities):
        text = POOL_YAML % (POOL, self.sim_port)
        for i, p in enumerate(priorities):
            text += OBJECTIVE_YAML % (i, p, POOL)
        os.makedirs(os.path.join(self.tmp, "manifests"), exist_ok=True)
        return self.write(os.path.join("manifests", "pool.yaml"), text)

    def start(self):
        a = self.args
        self.sim_port = free_port()
        self.addrs = ["127.0.9.%d" % (i + 1) for i in range(a.pods)]
        self.sim = subprocess.Popen(
            [os.path.join(self.build, "sim"), "--instances", str(a.pods), "--base-addr",
             self.addrs[0], "--port", str(self.sim_port), "--time-scale", "0.2",
             "--seed", str(a.seed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for addr in self.addrs:
            self.wait_http("http://%s:%d/health" % (addr, self.sim_port))
        self.manifests([5, 0, -1, -1])
        self.config = self.write("config.yaml", DEFAULT_CONFIG)
        self.grpc, self.health, self.metrics = free_port(), free_port(), free_port()
        self.kepp_log = open(os.path.join(self.tmp, "kepp.log"), "wb")
        self.kepp = subprocess.Popen(
            [os.path.join(self.build, "kepp"), "--secure-serving=false", "--kernel=off",
             "--grpc-port", str(self.grpc), "--grpc-health-port", str(self.health),
             "--metrics-port", str(self.metrics), "--workers", "2",
             "--endpoints", ",".join("%s:%d" % (x, self.sim_port) for x in self.addrs),
             "--manifests", os.path.join(self.tmp, "manifests"), "--pool-name", POOL,
             "--config-file", self.config, "--metrics-staleness-threshold", "1s",
             "--handshake-timeout", "2s"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.kepp_log)
        self.wait_http("http://127.0.0.1:%d/healthz" % self.metrics)

    def wait_http(self, url, timeout=15):
        deadline = time.time() + timeout
        while True:
            try:
                urllib.request.urlopen(url, timeout=1).read()
                return
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError("%s never answered" % url)
                time.sleep(0.05)

    def fd_count(self):
        """(kepp's open fds but its outbound connections, outbound
        connections). Outbound ones are the scrapes' (libcurl keeps at most
        a connection or two per pod, how many at a given moment depends on
        timing); every other fd, the listeners and the connections accepted
        on them included, must come back to where it was. A socket is told
        by its local port, read from a copy of the fd (pidfd_getfd): that
        works in every TCP state, a reset connection's too."""
        pid, own = self.kepp.pid, {self.grpc, self.health, self.metrics}
        pidfd = os.pidfd_open(pid)
        total = outbound = 0
        try:
            for name in os.listdir("/proc/%d/fd" % pid):
                try:
                    link = os.readlink("/proc/%d/fd/%s" % (pid, name))
                except OSError:
                    continue  # closed meanwhile
                total += 1
                if not link.startswith("socket:"):
                    continue
                fd = LIBC.syscall(SYS_PIDFD_GETFD, pidfd, int(name), 0)
                if fd < 0:
                    continue
                with socket.socket(fileno=fd) as sk:
                    if sk.family in (socket.AF_INET, socket.AF_INET6) and \
                            sk.getsockname()[1] not in own:
                        outbound += 1
        finally:
            os.close(pidfd)
        return total - outbound, outbound

    def fault(self):
        r = self.rng.random()
        addr = self.rng.choice(self.addrs)
        if r < 0.35:
            f = self.rng.choice([{"metrics": "ok"}, {"metrics": "ok"},
                                 {"metrics": "slow", "metrics_delay_ms": 3000},
                                 {"metrics": "fail"}, {"metrics": "garbage"}])
            body = json.dumps(f).encode()
            urllib.request.urlopen(urllib.request.Request(
                "http://%s:%d/sim/fault" % (addr, self.sim_port), data=body), timeout=5).read()
            self.count("metrics fault: " + f["metrics"])
        elif r < 0.5:
            n = self.rng.randint(1, 200)
            payload = PREFACE + b"".join(frame(0x1, 0x4, 2 * i + 1, HEADERS) for i in range(n))
            raw_client(self.grpc, payload, self.rng.random())
            self.count("silent streams, then gone")
        elif r < 0.6:
            payload = PREFACE + b"".join(
                frame(0x1, 0x4, 2 * i + 1, HEADERS) + frame(0x3, 0, 2 * i + 1, b"\0\0\0\x08")
                for i in range(2000))
            raw_client(self.grpc, payload, 0.2)
            self.count("RST_STREAM flood")
        elif r < 0.7:
            raw_client(self.grpc, b"", 0.1 + self.rng.random())
            self.count("connects, says nothing")
        elif r < 0.85:
            c = self.rng.choice(CONFIGS + [BAD_CONFIG])
            self.write("config.yaml", c if c is not None else DEFAULT_CONFIG)
            self.count("config change" if c is not BAD_CONFIG else "invalid config change")
        else:
            prios = [self.rng.choice([5, 0, -1, -3]) for _ in range(4)]
            self.manifests(prios)
            self.count("manifest change")

    def chaos(self):
        while not self.stop.wait(self.rng.uniform(0.5, 2.0)):
            try:
                self.fault()
            except OSError as e:
                self.count("fault error: %s" % type(e).__name__)
            self.fds.append(self.fd_count()[0])

    def run(self):
        a = self.args
        self.start()
        time.sleep(1)
        fds_before, _ = self.fd_count()
        bench = [os.path.join(self.build, "bench-extproc"), "--port", str(self.grpc),
                 "--pid", str(self.kepp.pid), "--json", "--rate", str(a.rate),
                 "--duration", str(a.duration), "--warmup", "1", "--conns", "4",
                 "--streams", "64", "--response", "--objectives", "4", "--body", a.body,
                 "--chunk", "4k", "--rss-every", str(max(1, a.duration // 60)),
                 "--label", "soak"]
        chaos = threading.Thread(target=self.chaos, daemon=True)
        chaos.start()
        out = subprocess.run(bench, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.stop.set()
        chaos.join()
        # Heal every pod and let hostile connections time out before counting.
        for addr in self.addrs:
            urllib.request.urlopen(urllib.request.Request(
                "http://%s:%d/sim/fault" % (addr, self.sim_port),
                data=b'{"metrics":"ok"}'), timeout=5).read()
        time.sleep(3)
        fds_after, self.scrape_conns = self.fd_count()
        if out.returncode != 0:
            raise RuntimeError("bench-extproc failed (%d): %s" % (out.returncode,
                                                                  out.stderr.decode()))
        r = json.loads(out.stdout.decode().strip().splitlines()[-1])
        self.kepp.send_signal(signal.SIGTERM)
        rc = self.kepp.wait(timeout=60)
        return r, fds_before, fds_after, rc

    def close(self):
        for p in (self.kepp, self.sim):
            if p and p.poll() is None:
                p.kill()
                p.wait()
        if self.sim:
            self.sim.wait()


def verdict(args, r, fds_before, fds_after, rc, events):
    kinds = dict(r["error_kinds"])
    answered = kinds.pop("immediate", 0)
    failed = sum(kinds.values())
    series = [kb for _, kb in r["rss_series"]]
    half = series[len(series) // 2:] if len(series) >= 4 else series
    growth_kb = max(half) - half[0] if half else 0
    rows = [
        ("duration", "%ds at %g req/s, %s bodies" % (args.duration, args.rate, args.body)),
        ("requests answered", "%d (%d routed, %d ImmediateResponse)" % (
            r["ok"] + answered, r["ok"], answered)),
        ("requests failed", "%d %s" % (failed, kinds if failed else "")),
        ("kepp RSS", "start %.1f MB, peak %.1f MB, end %.1f MB" % (
            series[0] / 1024 if series else 0, r["hwm_kb"] / 1024, r["rss_kb"] / 1024)),
        ("RSS growth, second half", "%.2f MB (limit %.1f MB)" % (growth_kb / 1024,
                                                                  args.rss_slack)),
        ("open fds", "before %d, after %d (max during faults %d), besides %d scrape "
         "connections" % (fds_before, fds_after, max([fds_after] + events["fds"]),
                          events["scrape_conns"])),
        ("kepp exit on SIGTERM", str(rc)),
        ("decision latency", "p50 %s us, p99 %s us" % (r["decision_us"]["p50"],
                                                        r["decision_us"]["p99"])),
    ]
    print("| what | result |\n|---|---|")
    for k, v in rows:
        print("| %s | %s |" % (k, v))
    print("\nfaults injected:")
    for k in sorted(events["counts"]):
        print("  %-28s %d" % (k, events["counts"][k]))
    problems = []
    if failed:
        problems.append("%d requests failed" % failed)
    if growth_kb / 1024 > args.rss_slack:
        problems.append("RSS grew %.2f MB in the second half" % (growth_kb / 1024))
    if abs(fds_after - fds_before) > 2:
        problems.append("open fds %d -> %d" % (fds_before, fds_after))
    if events["scrape_conns"] > 2 * args.pods:
        problems.append("%d scrape connections to %d pods" % (events["scrape_conns"],
                                                              args.pods))
    if rc != 0:
        problems.append("kepp exited %d" % rc)
    if r["ok"] == 0:
        problems.append("no request was routed")
    return problems


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.environ.get("BUILD", "build"))
    ap.add_argument("--duration", type=int, default=1800, help="seconds of load (1800)")
    ap.add_argument("--rate", type=float, default=400, help="requests/s (400)")
    ap.add_argument("--body", default="4k", help="request body size (4k)")
    ap.add_argument("--pods", type=int, default=8, help="simulated pods (8)")
    ap.add_argument("--rss-slack", type=float, default=4.0,
                    help="MB of RSS growth allowed over the second half (4)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--smoke", action="store_true", help="20 s at 200 req/s")
    args = ap.parse_args(argv[1:])
    if args.smoke:
        args.duration, args.rate = 20, 200
    s = Soak(args)
    try:
        r, before, after, rc = s.run()
    finally:
        s.close()
    problems = verdict(args, r, before, after, rc,
                       {"counts": s.events, "fds": s.fds, "scrape_conns": s.scrape_conns})
    if problems:
        print("\nFAILED: " + "; ".join(problems) + " (kepp's log: %s/kepp.log)" % s.tmp)
        with open(os.path.join(s.tmp, "kepp.log"), "rb") as f:
            sys.stderr.write(f.read()[-4000:].decode("utf-8", "replace"))
        return 1
    shutil.rmtree(s.tmp, ignore_errors=True)
    print("\nOK: every request answered, no leak")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
