"""The kernel fast path end to end: kepp in a network namespace the test
creates, its BPF programs attached to a cgroup the test creates, pins in a
private bpffs. Three backends on distinct IPs serve /metrics with different
load; a client in the cgroup connects to the VIP and must land on the
best-scored backend while getpeername() still shows the VIP; sockops counts
the connections in flight; a stale table declines (the connection keeps the
VIP); a restarted kepp adopts the pinned datapath.

Needs root, bpffs and cgroup2. Under CI=true a missing capability fails the
test; elsewhere it is reported as a failure too, with the reason (a BPF
test never skips in silence)."""
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import envoy
from envoy import TestFailure, check, eq

KEPP = os.path.join(envoy.BUILD_DIR, "kepp")
PY = sys.executable
VIP = "10.77.1.1"
VIP_PORT = 80
BACKENDS = ["10.77.0.1", "10.77.0.2", "10.77.0.3"]
BE_PORT = 8000
BEST = "10.77.0.2"

# One process serves every backend address: /metrics with the load given on
# the command line ("ip=waiting,kv"), anything else answers its own address.
BACKEND_SERVER = r"""
import sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        ip, port = self.server.server_address[:2]
        if self.path == "/metrics":
            w, kv = self.server.load
            body = ("# TYPE vllm:num_requests_waiting gauge\n"
                    "vllm:num_requests_waiting{model_name=\"m\"} %s\n"
                    "# TYPE vllm:num_requests_running gauge\n"
                    "vllm:num_requests_running{model_name=\"m\"} 0\n"
                    "# TYPE vllm:kv_cache_usage_perc gauge\n"
                    "vllm:kv_cache_usage_perc{model_name=\"m\"} %s\n" % (w, kv)).encode()
        else:
            body = ("%s:%d" % (ip, port)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
# A client that goes away mid-answer (a stopped or killed kepp) is no error.
ThreadingHTTPServer.handle_error = lambda self, request, client_address: None
for spec in sys.argv[1:]:
    addr, load = spec.split("=")
    ip, port = addr.rsplit(":", 1)
    s = ThreadingHTTPServer((ip, int(port)), H)
    s.load = load.split(",")
    threading.Thread(target=s.serve_forever, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

# The client: |n| connections to the VIP, held open until all are made when
# |hold| > 0 seconds; prints one JSON line per connection.
CLIENT = r"""
import json, socket, sys, time
vip, port, n, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
socks = []
for i in range(n):
    s = socket.create_connection((vip, port), timeout=5)
    peer = s.getpeername()
    s.sendall(b"GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
            [l for l in data.split(b"\r\n") if l.lower().startswith(b"content-length")][0]
            .split(b":")[1]):
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    print(json.dumps({"peer": list(peer[:2]), "answer": data.split(b"\r\n\r\n", 1)[1].decode()}),
          flush=True)
    if hold > 0:
        socks.append(s)
    else:
        s.close()
if hold > 0:
    print("holding", flush=True)
    time.sleep(hold)
"""


def run(*cmd, check_rc=True):
    p = subprocess.run(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if check_rc and p.returncode != 0:
        raise TestFailure("%s: exit %d: %s" % (" ".join(cmd), p.returncode,
                                               p.stderr.decode(errors="replace")))
    return p.stdout.decode(errors="replace")


def cgroup2_root():
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            if parts[2] == "cgroup2":
                return parts[1]
    raise TestFailure("no cgroup2 mount: the kernel fast path test cannot run")


def require_privileges():
    """Fails loudly when BPF tests cannot run here (never a silent skip)."""
    why = None
    if os.geteuid() != 0:
        why = "not root"
    elif not os.path.exists("/sys/kernel/btf/vmlinux"):
        why = "no kernel BTF"
    elif not shutil.which("bpftool") or not shutil.which("nsenter"):
        why = "bpftool or nsenter missing"
    if why:
        raise TestFailure("kernel fast path test cannot run (%s)%s" % (
            why, " and CI=true" if os.environ.get("CI") == "true" else ""))


class Env:
    """A netns with the VIP and backend IPs on lo, a cgroup, a private bpffs."""

    def __init__(self):
        tag = "%d-%d" % (os.getpid(), int(time.time() * 1000) % 100000)
        self.ns = "kepp-it-" + tag
        self.cg = os.path.join(cgroup2_root(), "kepp-it-" + tag)
        self.tmp = tempfile.mkdtemp(prefix="kepp-bpf-")
        self.bpffs = os.path.join(self.tmp, "bpffs")
        self.procs = []
        self.kepps = []

    def __enter__(self):
        require_privileges()
        try:
            run("ip", "netns", "add", self.ns)
            run("ip", "-n", self.ns, "link", "set", "lo", "up")
            for ip in BACKENDS + [VIP]:
                run("ip", "-n", self.ns, "addr", "add", ip + "/32", "dev", "lo")
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
        for k in self.kepps:
            k.kill()
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if os.path.ismount(self.bpffs):
            shutil.rmtree(os.path.join(self.bpffs, "kepp"), ignore_errors=True)
            run("umount", self.bpffs, check_rc=False)
        if os.path.isdir(self.cg):
            for _ in range(50):
                try:
                    os.rmdir(self.cg)
                    break
                except OSError:
                    time.sleep(0.05)
        run("ip", "netns", "del", self.ns, check_rc=False)
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

    def backends(self, loads):
        """Starts the backends: |loads| maps ip -> (waiting, kv), plus a
        listener on the VIP itself that stands for the fallback path."""
        specs = ["%s:%d=%s,%s" % (ip, BE_PORT, w, kv) for ip, (w, kv) in loads.items()]
        specs.append("%s:%d=0,0" % (VIP, VIP_PORT))
        p = self.spawn([PY, "-c", BACKEND_SERVER] + specs, stdout=subprocess.PIPE)
        if p.stdout.readline().strip() != b"ready":
            raise TestFailure("backend servers did not start")

    def client(self, n=1, hold=0.0, cgroup=True, wait=True):
        p = self.spawn([PY, "-c", CLIENT, VIP, str(VIP_PORT), str(n), str(hold)], cgroup=cgroup,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if not wait:
            return p
        out, err = p.communicate(timeout=20)
        if p.returncode != 0:
            raise TestFailure("client failed: %s" % err.decode(errors="replace"))
        return [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]

    def kepp(self, extra=()):
        k = KernelKepp(self, extra)
        self.kepps.append(k)
        k.start()
        return k

    def dump(self, name):
        """bpftool's JSON dump of a pinned map (what the README documents)."""
        out = run("bpftool", "-j", "map", "dump", "pinned",
                  os.path.join(self.bpffs, "kepp", name))
        return json.loads(out)


class KernelKepp:
    def __init__(self, env, extra):
        self.env = env
        self.log = os.path.join(env.tmp, "kepp-%d.log" % len(env.kepps))
        eps = ",".join("%s:%d" % (ip, BE_PORT) for ip in BACKENDS)
        self.args = [KEPP, "--secure-serving=false", "--kernel=on", "--workers", "1",
                     "--grpc-port", str(envoy.free_port()),
                     "--grpc-health-port", str(envoy.free_port()),
                     "--endpoints", eps, "--fastpath", "%s:%d=m" % (VIP, VIP_PORT),
                     "--bpffs", env.bpffs, "--cgroup", env.cg,
                     "--drain-timeout", "1s", "--v", "3"] + list(extra)
        self.proc = None

    def start(self):
        if not os.access(KEPP, os.X_OK):
            raise TestFailure("%s is missing: build it first" % KEPP)
        self._f = open(self.log, "wb")
        self.proc = self.env.spawn(self.args, stdout=subprocess.DEVNULL, stderr=self._f)
        self.wait_log("kernel fast path loaded", 15)

    def text(self):
        with open(self.log, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_log(self, what, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if what in self.text():
                return
            if self.proc.poll() is not None:
                raise TestFailure("kepp exited with %d:\n%s" % (self.proc.returncode,
                                                                self.text()))
            time.sleep(0.05)
        raise TestFailure("kepp never logged %r:\n%s" % (what, self.text()))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            rc = self.proc.wait(timeout=15)
            eq(rc, 0, "kepp exit code after SIGTERM")
        self._f.close()

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def svc_table(env):
    """The published table of the VIP: [(ip, weight)]."""
    for e in env.dump("kepp_svc_v1"):
        v = e.get("formatted", e)["value"]
        out = []
        for b in v["be"][:v["n_backends"]]:
            ip = ".".join(str(x) for x in (b["addr"]["ip"][3]).to_bytes(4, "little"))
            out.append((ip, b["weight"]))
        return out
    return []


def wait_scored(env, timeout=10):
    """Waits until kepp published weights from the scraped metrics (BEST on top)."""
    deadline = time.time() + timeout
    table = []
    while time.time() < deadline:
        table = svc_table(env)
        if len(table) == 3 and table[0][0] == BEST and table[0][1] > table[1][1]:
            return table
        time.sleep(0.1)
    raise TestFailure("kepp never published a scored table: %r" % (table,))


LOADS = {"10.77.0.1": (5, 0.8), BEST: (0, 0.1), "10.77.0.3": (3, 0.6)}


@contextlib.contextmanager
def fastpath_env():
    with Env() as env:
        env.backends(LOADS)
        yield env


FIXTURES = {"env": fastpath_env}


def test_connect_lands_on_best_backend(env):
    env.kepp()
    wait_scored(env)
    for c in env.client(n=5):
        eq(c["answer"], "%s:%d" % (BEST, BE_PORT), "backend that answered")
        eq(c["peer"], [VIP, VIP_PORT], "getpeername() shows the VIP")
    # A process outside the cgroup is not steered: it reaches the VIP itself.
    for c in env.client(n=1, cgroup=False):
        eq(c["answer"], "%s:%d" % (VIP, VIP_PORT), "unsteered connection")


def inflight(env):
    out = {}
    for e in env.dump("kepp_be_v1"):
        f = e.get("formatted", e)
        ip = ".".join(str(x) for x in (f["key"]["ip"][3]).to_bytes(4, "little"))
        out[ip] = f["value"]
    return out


def test_sockops_counts_inflight(env):
    # One scrape, then none for a while: the connections below all count
    # against the same scrape.
    env.kepp(["--refresh-metrics-interval", "5s"])
    wait_scored(env)
    before = sum(v["connects"] for v in inflight(env).values())
    p = env.client(n=4, hold=30, wait=False)
    lines = []
    while len(lines) < 5:
        line = p.stdout.readline()
        if not line:
            raise TestFailure("client died: %s" % p.stderr.read().decode(errors="replace"))
        lines.append(line)
    counts = inflight(env)
    eq(sum(v["inflight"] for v in counts.values()), 4, "connections in flight (%r)" % counts)
    eq(sum(v["connects"] for v in counts.values()) - before, 4, "connections counted")
    # Live counts correct the weights: four held connections do not all
    # herd onto the best backend.
    answers = [json.loads(x)["answer"] for x in lines if x.startswith(b"{")]
    check(len(set(answers)) > 1, "held connections spread over backends: %r" % answers)
    p.kill()
    p.wait()
    deadline = time.time() + 5
    while time.time() < deadline:
        counts = inflight(env)
        if sum(v["inflight"] for v in counts.values()) == 0:
            break
        time.sleep(0.05)
    eq(sum(v["inflight"] for v in counts.values()), 0, "in flight after close (%r)" % counts)
    eq(sum(v["closes"] for v in counts.values()), sum(v["connects"] for v in counts.values()),
       "every counted connection closed")


def test_stale_table_declines(env):
    k = env.kepp()
    wait_scored(env)
    k.proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(1.6)  # the table's max age is 1s with the default scrape interval
        for c in env.client(n=2):
            eq(c["answer"], "%s:%d" % (VIP, VIP_PORT), "declined: the VIP keeps the connection")
    finally:
        k.proc.send_signal(signal.SIGCONT)
    time.sleep(0.5)
    eq(env.client(n=1)[0]["answer"], "%s:%d" % (BEST, BE_PORT), "steered again once fresh")


def test_restart_adopts_pinned_datapath(env):
    k = env.kepp()
    wait_scored(env)
    k.stop()
    # Links and maps are pinned: the datapath keeps steering while the table
    # is fresh, with no kepp running.
    eq(env.client(n=1)[0]["answer"], "%s:%d" % (BEST, BE_PORT), "steered with kepp stopped")
    k2 = env.kepp()
    check("adopted a pinned BPF link" in k2.text(), "second kepp adopted the links:\n" + k2.text())
    links = run("bpftool", "-j", "cgroup", "show", env.cg)
    eq(len(json.loads(links)), 5, "one attachment per program after the restart: " + links)
    wait_scored(env)
    eq(env.client(n=1)[0]["answer"], "%s:%d" % (BEST, BE_PORT), "steered after the restart")
