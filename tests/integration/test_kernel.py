"""The kernel fast path end to end: kepp in a network namespace the test
creates, its BPF programs attached to a cgroup the test creates, pins in a
private bpffs. Three backends on distinct IPs serve /metrics with different
load; a client in the cgroup connects to the VIP and must land on the
best-scored backend while getpeername() still shows the VIP; sockops counts
the connections in flight; a stale table declines and sk_lookup hands the
connection to kepp's fallback proxy, which schedules each request (and, on
SIGTERM, lets those in flight finish); with kepp gone the VIP's own listener
answers; a restarted kepp adopts the pinned datapath; connections pinned to a
pod that left the pool close after --fastpath-drain; /metrics carries what
the kernel and the proxy counted.

Needs root, bpffs and cgroup2. Under CI=true a missing capability fails the
test; elsewhere it is reported as a failure too, with the reason (a BPF
test never skips in silence)."""
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import envoy
from envoy import TestFailure, check, eq
from test_observability import promtool, sample

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
import json, os, socket, sys, threading, time
# --load-file=PATH first: while PATH exists, its "waiting,kv" is every
# backend's load; PATH.<port> overrides it for the backends on that port.
LOAD_FILE = sys.argv.pop(1)[12:] if sys.argv[1].startswith("--load-file=") else None
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        # What the pod saw, as JSON; SSE in chunks when the body asks to stream.
        ip, port = self.server.server_address[:2]
        ip = "[%s]" % ip if ":" in ip else ip
        n = int(self.headers.get("Content-Length", "0"))
        req = json.loads(self.rfile.read(n) or b"{}")
        time.sleep(float(req.get("delay", 0)))  # a slow pod
        info = {"served_by": "%s:%d" % (ip, port), "model": req.get("model"),
                "dest": self.headers.get("x-gateway-destination-endpoint"),
                "via": self.headers.get("Via"), "te": self.headers.get("Transfer-Encoding")}
        if req.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(3):
                ev = ("data: %s\n\n" % json.dumps(dict(info, i=i))).encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(ev), ev))
                self.wfile.flush()
                time.sleep(0.05)
            self.wfile.write(b"0\r\n\r\n")
            return
        body = json.dumps(info).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        ip, port = self.server.server_address[:2]
        ip = "[%s]" % ip if ":" in ip else ip
        if self.path == "/metrics":
            w, kv = self.server.load
            for f in (LOAD_FILE and ["%s.%d" % (LOAD_FILE, port), LOAD_FILE]) or []:
                if os.path.exists(f):
                    w, kv = open(f).read().split(",")
                    break
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
class Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6
for spec in sys.argv[1:]:
    addr, load = spec.split("=")
    ip, port = addr.rsplit(":", 1)
    s = (Server6 if ":" in ip else ThreadingHTTPServer)((ip, int(port)), H)
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


# An HTTP client on one keep-alive connection: every argument is a request
# body (JSON text; "chunked:" first sends it chunked); prints one JSON line
# per answer.
HTTP_CLIENT = r"""
import http.client, json, sys
vip, port = sys.argv[1], int(sys.argv[2])
c = http.client.HTTPConnection(vip, port, timeout=10)
for body in sys.argv[3:]:
    chunked = body.startswith("chunked:")
    if chunked:
        c.request("POST", "/v1/completions", body=iter([body[8:].encode()]),
                  headers={"Content-Type": "application/json"}, encode_chunked=True)
    else:
        c.request("POST", "/v1/completions", body=body.encode(),
                  headers={"Content-Type": "application/json"})
    peer = list(c.sock.getpeername()[:2])  # the socket goes with Connection: close
    r = c.getresponse()
    data = r.read().decode()
    print(json.dumps({"status": r.status, "via": r.getheader("Via"),
                      "ctype": r.getheader("Content-Type"), "body": data, "peer": peer,
                      "connection": r.getheader("Connection")}), flush=True)
"""


def hostport(ip, port):
    return "[%s]:%d" % (ip, port) if ":" in ip else "%s:%d" % (ip, port)


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

    def __init__(self, vip=VIP, backends=BACKENDS):
        self.vip, self.be_ips = vip, backends
        tag = "%d-%d" % (os.getpid(), int(time.time() * 1000) % 100000)
        self.ns = "kepp-it-" + tag
        self.cg = os.path.join(cgroup2_root(), "kepp-it-" + tag)
        self.tmp = tempfile.mkdtemp(prefix="kepp-bpf-")
        self.bpffs = os.path.join(self.tmp, "bpffs")
        self.procs = []
        self.kepps = []
        self.peer = None  # a second netns on a veth pair (xdp tests)
        self.load_file = os.path.join(self.tmp, "load")

    def __enter__(self):
        require_privileges()
        try:
            run("ip", "netns", "add", self.ns)
            run("ip", "-n", self.ns, "link", "set", "lo", "up")
            for ip in self.be_ips + [self.vip]:
                if ":" in ip:
                    run("ip", "-n", self.ns, "addr", "add", ip + "/128", "dev", "lo", "nodad")
                else:
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
        if self.peer:
            run("ip", "netns", "del", self.peer, check_rc=False)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def nsenter(self, ns=None):
        return ["nsenter", "--net=/run/netns/" + (ns or self.ns)]

    def add_peer(self, iface):
        """A second netns joined to this one by a veth pair (|iface| on
        kepp's side, 10.78.0.1/24), routing the VIP over it."""
        self.peer = self.ns + "-p"
        run("ip", "netns", "add", self.peer)
        run("ip", "link", "add", iface, "netns", self.ns, "type", "veth", "peer", "name",
            "kp0", "netns", self.peer)
        run("ip", "-n", self.ns, "addr", "add", "10.78.0.1/24", "dev", iface)
        run("ip", "-n", self.ns, "link", "set", iface, "up")
        run("ip", "-n", self.peer, "addr", "add", "10.78.0.2/24", "dev", "kp0")
        run("ip", "-n", self.peer, "link", "set", "kp0", "up")
        run("ip", "-n", self.peer, "link", "set", "lo", "up")
        run("ip", "-n", self.peer, "route", "add", self.vip + "/32", "via", "10.78.0.1")

    def spawn(self, args, cgroup=False, ns=None, **kw):
        def join():
            with open(os.path.join(self.cg, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(self.nsenter(ns) + args, preexec_fn=join if cgroup else None, **kw)
        self.procs.append(p)
        return p

    def backends(self, loads, more=()):
        """Starts the backends: |loads| maps ip -> (waiting, kv), |more|
        (ip, port, waiting, kv) on other ports, plus a listener on the VIP
        itself that stands for the fallback path."""
        specs = ["%s:%d=%s,%s" % (ip, BE_PORT, w, kv) for ip, (w, kv) in loads.items()]
        specs += ["%s:%d=%s,%s" % m for m in more]
        specs.append("%s:%d=0,0" % (self.vip, VIP_PORT))
        p = self.spawn([PY, "-c", BACKEND_SERVER, "--load-file=" + self.load_file] + specs,
                       stdout=subprocess.PIPE)
        if p.stdout.readline().strip() != b"ready":
            raise TestFailure("backend servers did not start")

    def client(self, n=1, hold=0.0, cgroup=True, wait=True):
        p = self.spawn([PY, "-c", CLIENT, self.vip, str(VIP_PORT), str(n), str(hold)], cgroup=cgroup,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if not wait:
            return p
        out, err = p.communicate(timeout=20)
        if p.returncode != 0:
            raise TestFailure("client failed: %s" % err.decode(errors="replace"))
        return [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]

    def http(self, bodies, cgroup=False, wait=True, ns=None):
        p = self.spawn([PY, "-c", HTTP_CLIENT, self.vip, str(VIP_PORT)] + list(bodies),
                       cgroup=cgroup, ns=ns, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if not wait:
            return p
        out, err = p.communicate(timeout=20)
        if p.returncode != 0:
            raise TestFailure("http client failed: %s" % err.decode(errors="replace"))
        return [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]

    def connects(self, ns=None):
        """Whether a TCP connection to the VIP opens within a second."""
        code = ("import socket,sys\ntry:\n socket.create_connection((sys.argv[1], %d), "
                "timeout=1)\n print('ok')\nexcept OSError:\n print('fail')" % VIP_PORT)
        p = self.spawn([PY, "-c", code, self.vip], ns=ns, stdout=subprocess.PIPE)
        return p.communicate(timeout=10)[0].strip() == b"ok"

    def metrics(self, port=9090):
        """/metrics of the kepp in the namespace (its default --metrics-port)."""
        code = ("import sys,urllib.request\nsys.stdout.write(urllib.request.urlopen("
                "'http://127.0.0.1:%d/metrics', timeout=5).read().decode())" % port)
        p = self.spawn([PY, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = p.communicate(timeout=10)
        if p.returncode != 0:
            raise TestFailure("GET /metrics: %s" % err.decode(errors="replace"))
        return out.decode()

    def kepp(self, extra=(), endpoints=None):
        k = KernelKepp(self, extra, endpoints)
        self.kepps.append(k)
        k.start()
        return k

    def dump(self, name):
        """bpftool's JSON dump of a pinned map (what the README documents)."""
        out = run("bpftool", "-j", "map", "dump", "pinned",
                  os.path.join(self.bpffs, "kepp", name))
        return json.loads(out)


class KernelKepp:
    def __init__(self, env, extra, endpoints=None):
        self.env = env
        self.log = os.path.join(env.tmp, "kepp-%d.log" % len(env.kepps))
        eps = endpoints or ",".join(hostport(ip, BE_PORT) for ip in env.be_ips)
        self.args = [KEPP, "--secure-serving=false", "--kernel=on", "--workers", "1",
                     "--grpc-port", str(envoy.free_port()),
                     "--grpc-health-port", str(envoy.free_port()),
                     "--endpoints", eps, "--fastpath", hostport(env.vip, VIP_PORT) + "=m",
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


def addr_str(words):
    """A kepp_addr's ip (four network-order words, as bpftool prints them)."""
    raw = b"".join(w.to_bytes(4, "little") for w in words)
    if raw[:12] == b"\0" * 10 + b"\xff\xff":
        return socket.inet_ntop(socket.AF_INET, raw[12:])
    return socket.inet_ntop(socket.AF_INET6, raw)


def svc_table(env, ports=False):
    """The published table of the VIP: [(ip, weight)], or [("ip:port",
    weight)] with |ports|."""
    for e in env.dump("kepp_svc_v1"):
        v = e.get("formatted", e)["value"]
        out = []
        for b in v["be"][:v["n_backends"]]:
            a = addr_str(b["addr"]["ip"])
            if ports:
                a = hostport(a, socket.ntohs(b["addr"]["port"]))
            out.append((a, b["weight"]))
        return out
    return []


def wait_scored(env, timeout=10, best=BEST):
    """Waits until kepp published weights from the scraped metrics (|best| on top)."""
    deadline = time.time() + timeout
    table = []
    while time.time() < deadline:
        table = svc_table(env)
        if len(table) == 3 and table[0][0] == best and table[0][1] > table[1][1]:
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
    # A process outside the cgroup is not steered at connect(): sk_lookup
    # hands it to kepp's fallback proxy, which picks a pod for it (a GET
    # has no body: any pod, spec §2.7 step 1).
    for c in env.client(n=2, cgroup=False):
        check(c["answer"] in ["%s:%d" % (ip, BE_PORT) for ip in BACKENDS],
              "unsteered connection served by a pod through the proxy: %r" % c)


def inflight(env):
    out = {}
    for e in env.dump("kepp_be_v1"):
        f = e.get("formatted", e)
        ip = ".".join(str(x) for x in (f["key"]["ip"][3]).to_bytes(4, "little"))
        out[ip] = f["value"]
    return out


def test_sockops_counts_inflight(env):
    # One scrape, then none for a while: the connections below all count
    # against the same scrape. Spread over 5s, the first scrapes leave some
    # pods without metrics for a while, which would get no kernel weight.
    env.kepp(["--refresh-metrics-interval", "5s", "--exclude-stale-endpoints=false"])
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


def verdicts(env):
    """connect() decisions so far: {picked, stale, ...} summed over CPUs."""
    names = ["picked", "no_service", "stale", "empty", "all_shed"]
    out = dict.fromkeys(names, 0)
    for e in env.dump("kepp_verdict_v1"):
        f = e.get("formatted", e)
        out[names[f["key"]]] += sum(v["value"] for v in f["values"])
    return out


def test_stale_table_declines(env):
    k = env.kepp()
    wait_scored(env)
    k.proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(1.6)  # the table's max age is 1s with the default scrape interval
        before = verdicts(env)["stale"]
        # Declined at connect(): the connection keeps the VIP and sk_lookup
        # queues it on the (stopped) kepp's fallback listener.
        p = env.http(['{"prompt":"hi"}'], cgroup=True, wait=False)
        deadline = time.time() + 5
        while verdicts(env)["stale"] == before and time.time() < deadline:
            time.sleep(0.05)
        eq(verdicts(env)["stale"], before + 1, "connect() declined a stale table")
    finally:
        k.proc.send_signal(signal.SIGCONT)
    out, err = p.communicate(timeout=20)
    r = json.loads(out.decode().splitlines()[0])
    eq(r["via"], "1.1 kepp", "declined connection answered through the proxy")
    eq(r["peer"], [VIP, VIP_PORT], "the client is connected to the VIP itself")
    eq(json.loads(r["body"])["served_by"], "%s:%d" % (BEST, BE_PORT), "the proxy's pick")
    time.sleep(0.5)
    eq(env.client(n=1)[0]["answer"], "%s:%d" % (BEST, BE_PORT), "steered again once fresh")


def test_killed_kepp_leaves_the_vip(env):
    k = env.kepp()
    wait_scored(env)
    k.kill()
    # The fallback listener died with kepp (the kernel dropped it from the
    # SOCKMAP); once the table is stale every connection keeps the VIP and
    # the normal socket lookup answers.
    time.sleep(1.3)
    for c in env.client(n=2):
        eq(c["answer"], "%s:%d" % (VIP, VIP_PORT), "kepp gone: the VIP's own listener")
    eq(env.client(n=1, cgroup=False)[0]["answer"], "%s:%d" % (VIP, VIP_PORT),
       "kepp gone: no fallback proxy")


def test_fallback_proxy_schedules_requests(env):
    env.kepp()
    wait_scored(env)
    dest = "%s:%d" % (BEST, BE_PORT)
    # One keep-alive connection from outside the cgroup: every request is
    # scheduled on its own; a body without a model gets the service's.
    rs = env.http(['{"prompt":"hi"}', '{"model":"m","prompt":"again"}',
                   'chunked:{"prompt":"chunked body"}', '{"prompt":"s","stream":true}',
                   '{"prompt":', '{"model":"m","prompt":"after an error"}'])
    eq(len(rs), 6, "answers on one connection: %r" % rs)
    for r in rs[:3] + rs[5:]:
        eq(r["status"], 200, "status: %r" % r)
        eq(r["via"], "1.1 kepp", "through the proxy")
        eq(r["peer"], [VIP, VIP_PORT], "connected to the VIP")
        b = json.loads(r["body"])
        eq(b["served_by"], dest, "the best-scored pod")
        eq(b["model"], "m", "model (injected from --fastpath when absent)")
        eq(b["dest"], dest, "x-gateway-destination-endpoint to the pod")
        eq(b["te"], None, "the pod gets a Content-Length body")
    # SSE streams through, re-chunked.
    eq(rs[3]["ctype"], "text/event-stream", "SSE content type")
    events = [json.loads(x[6:]) for x in rs[3]["body"].split("\n\n") if x.startswith("data: ")]
    eq([e["i"] for e in events], [0, 1, 2], "every SSE event: %r" % rs[3]["body"])
    eq(events[0]["served_by"], dest, "streamed from the best pod")
    # A body the parser refuses: spec §2.8's status and text, keep-alive kept.
    eq(rs[4]["status"], 400, "bad body")
    check(rs[4]["body"].startswith("inference error: BadRequest - "), rs[4]["body"])
    # Every answer counted by status in /metrics.
    text = env.metrics()
    promtool(text)
    eq(sample(text, 'kepp_proxy_requests_total{code="200"}'), 5, "200s in /metrics")
    eq(sample(text, 'kepp_proxy_requests_total{code="400"}'), 1, "400s in /metrics")


def test_sigterm_lets_proxy_requests_finish(env):
    k = env.kepp()  # --drain-timeout 1s
    wait_scored(env)
    # In flight through the proxy at SIGTERM: one the pod answers within the
    # drain timeout, one it answers too late.
    quick = env.http(['{"prompt":"q","delay":0.6}'], wait=False)
    slow = env.http(['{"prompt":"s","delay":5}'], wait=False)
    idle = env.spawn([PY, "-c", "import socket,sys\ns=socket.create_connection((sys.argv[1],"
                      " %d))\nprint('up',flush=True)\nprint(repr(s.recv(1)),flush=True)"
                      % VIP_PORT, VIP], stdout=subprocess.PIPE)
    eq(idle.stdout.readline().strip(), b"up", "idle keep-alive connection open")
    time.sleep(0.25)
    t0 = time.time()
    k.proc.send_signal(signal.SIGTERM)
    out, _ = quick.communicate(timeout=10)
    r = json.loads(out.decode().splitlines()[0])
    eq(r["status"], 200, "the request in flight finished: %r" % r)
    eq(r["connection"], "close", "and its connection closes")
    eq(json.loads(r["body"])["served_by"], "%s:%d" % (BEST, BE_PORT), "answered by the pod")
    eq(idle.communicate(timeout=5)[0].strip(), b"b''", "the idle connection closed")
    eq(k.proc.wait(timeout=10), 0, "kepp exit code")
    took = time.time() - t0
    check(0.8 <= took <= 3, "kepp waited for the proxy's drain, then cut the rest: %.2fs" % took)
    out, _ = slow.communicate(timeout=10)
    check(not out.strip(), "the request past the drain timeout was cut: %r" % out)


def cgroup_progs(env):
    """The programs attached to the test's cgroup (bpftool's view)."""
    out = run("bpftool", "-j", "cgroup", "show", env.cg).strip()
    return json.loads(out) if out else []


def netns_links(env):
    """BPF links attached to the test's network namespace (sk_lookup)."""
    ino = os.stat("/run/netns/" + env.ns).st_ino
    return [l for l in json.loads(run("bpftool", "-j", "link", "show") or "[]")
            if l.get("type") == "netns" and l.get("netns_ino") == ino]


def pins(env):
    """Everything under <bpffs>/kepp, as relative paths (None: no folder)."""
    top = os.path.join(env.bpffs, "kepp")
    if not os.path.exists(top):
        return None
    return sorted(os.path.relpath(os.path.join(d, f), top)
                  for d, _, fs in os.walk(top) for f in fs)


def test_restart_adopts_pinned_datapath(env):
    k = env.kepp(["--kernel-keep"])
    wait_scored(env)
    k.stop()
    check("kernel fast path removed" not in k.text(), "--kernel-keep keeps it:\n" + k.text())
    # Links and maps are pinned: the datapath keeps steering while the table
    # is fresh, with no kepp running.
    eq(env.client(n=1)[0]["answer"], "%s:%d" % (BEST, BE_PORT), "steered with kepp stopped")
    eq(len(cgroup_progs(env)), 5, "cgroup programs stay with --kernel-keep")
    eq(len(netns_links(env)), 1, "the sk_lookup link stays with --kernel-keep")
    check("links/kepp_connect4" in pins(env) and "kepp_svc_v1" in pins(env), repr(pins(env)))
    k2 = env.kepp(["--kernel-keep"])
    check("adopted a pinned BPF link" in k2.text(), "second kepp adopted the links:\n" + k2.text())
    links = cgroup_progs(env)
    eq(len(links), 5, "one attachment per program after the restart: %r" % links)
    wait_scored(env)
    eq(env.client(n=1)[0]["answer"], "%s:%d" % (BEST, BE_PORT), "steered after the restart")


def test_clean_exit_removes_the_datapath(env):
    env.add_peer("kx2")
    k = env.kepp(["--xdp-iface", "kx2"])
    wait_scored(env)
    check("xdp" in run(*env.nsenter(), "ip", "-j", "link", "show", "kx2"), "XDP attached")
    eq(len(cgroup_progs(env)), 5, "cgroup programs attached")
    eq(len(netns_links(env)), 1, "sk_lookup attached")
    k.stop()
    said = [l for l in k.text().splitlines() if "kernel fast path removed" in l]
    eq(len(said), 1, "one line says the fast path was removed:\n" + k.text())
    check('"links":"6"' in said[0] and '"xdp":"1"' in said[0] and
          '"folder":"removed"' in said[0], said[0])
    eq(cgroup_progs(env), [], "no program left on the cgroup")
    eq(netns_links(env), [], "no sk_lookup link left on the network namespace")
    check("xdp" not in run(*env.nsenter(), "ip", "-j", "link", "show", "kx2"), "XDP detached")
    eq(pins(env), None, "no pin and no <bpffs>/kepp folder left")
    # Nothing steers any more, at once (not only once the table is stale).
    eq(env.client(n=1)[0]["answer"], "%s:%d" % (VIP, VIP_PORT), "the VIP's own listener")


def map_info(env, name):
    """bpftool's description of a pinned map (type, sizes, max_entries)."""
    return json.loads(run("bpftool", "-j", "map", "show", "pinned",
                          os.path.join(env.bpffs, "kepp", name)))


def test_upgrade_recreates_maps_of_another_layout(env):
    # Pins as an older kepp would have left them: a service map with a
    # smaller value, a backend map with fewer entries (same sizes), and a
    # map this kepp no longer has.
    top = os.path.join(env.bpffs, "kepp")
    os.mkdir(top)
    old = [("kepp_svc_v1", "hash", "20", "64", "256", ["flags", "1"]),
           ("kepp_be_v1", "hash", "20", "32", "1024", []),
           ("kepp_old_v0", "array", "4", "8", "4", [])]
    for name, typ, key, value, entries, more in old:
        run("bpftool", "map", "create", os.path.join(top, name), "type", typ, "key", key,
            "value", value, "entries", entries, "name", name, *more)
    svc_value = map_info(env, "kepp_svc_v1")["bytes_value"]
    k = env.kepp(["--kernel-keep"])
    lines = [json.loads(l) for l in k.text().splitlines() if "another layout" in l]
    eq(sorted(l["map"] for l in lines), ["kepp_be_v1", "kepp_svc_v1"],
       "the incompatible maps re-created:\n" + k.text())
    why = {l["map"]: l["why"] for l in lines}
    check(why["kepp_svc_v1"].startswith("key/value size 20/64, this kepp uses 20/"), why)
    eq(why["kepp_be_v1"], "max_entries 1024, this kepp uses 4096", "why kepp_be_v1")
    check("removed a pinned map another kepp version left" in k.text() and
          "kepp_old_v0" in k.text(), "the unknown map removed:\n" + k.text())
    check(not os.path.exists(os.path.join(top, "kepp_old_v0")), "kepp_old_v0 unpinned")
    check(map_info(env, "kepp_svc_v1")["bytes_value"] != svc_value, "a new kepp_svc_v1")
    eq(map_info(env, "kepp_be_v1")["max_entries"], 4096, "a new kepp_be_v1")
    # The datapath works on the new maps.
    wait_scored(env)
    for c in env.client(n=3):
        eq(c["answer"], "%s:%d" % (BEST, BE_PORT), "steered after the re-creation")
        eq(c["peer"], [VIP, VIP_PORT], "getpeername() shows the VIP")
    check(sum(v["connects"] for v in inflight(env).values()) >= 3, "sockops counts")
    # A second start finds only compatible maps: all reused, nothing re-created.
    k.stop()
    ids = {n: map_info(env, n)["id"] for n in ("kepp_svc_v1", "kepp_be_v1", "kepp_sk_v1")}
    k2 = env.kepp()
    check("another layout" not in k2.text(), "compatible maps reused:\n" + k2.text())
    eq({n: map_info(env, n)["id"] for n in ids}, ids, "the same maps after the restart")


VIP6 = "fd77::1:1"
BACKENDS6 = ["fd77::1", "fd77::2", "fd77::3"]
BEST6 = "fd77::2"


def test_ipv6_connect_and_getpeername():
    with Env(vip=VIP6, backends=BACKENDS6) as env:
        env.backends({"fd77::1": (5, 0.8), BEST6: (0, 0.1), "fd77::3": (3, 0.6)})
        env.kepp()
        wait_scored(env, best=BEST6)
        # connect6 steers to the best pod; getpeername6 shows the VIP.
        for c in env.client(n=3):
            eq(c["answer"], "[%s]:%d" % (BEST6, BE_PORT), "IPv6 backend that answered")
            eq(c["peer"], [VIP6, VIP_PORT], "getpeername() shows the IPv6 VIP")
        # Outside the cgroup: sk_lookup hands it to the proxy's IPv6 listener.
        r = env.http(['{"prompt":"v6"}'])[0]
        eq(r["via"], "1.1 kepp", "through the proxy")
        eq(r["peer"], [VIP6, VIP_PORT], "connected to the IPv6 VIP")
        eq(json.loads(r["body"])["served_by"], "[%s]:%d" % (BEST6, BE_PORT), "the proxy's pick")


SHEDDABLE_MODEL = """\
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceModel
metadata:
  name: m
  namespace: default
spec:
  modelName: m
  criticality: Sheddable
  poolRef:
    name: pool
"""


def vip_counters(env):
    out = {"packets": 0, "bytes": 0, "syn_shed": 0}
    for e in env.dump("kepp_vip_v1"):
        for v in e.get("formatted", e)["values"]:
            for k in out:
                out[k] += v["value"][k]
    return out


def svc_flags(env):
    for e in env.dump("kepp_svc_v1"):
        return e.get("formatted", e)["value"]["flags"]
    return 0


def wait_flags(env, want, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if svc_flags(env) & 3 == want:
            return
        time.sleep(0.05)
    raise TestFailure("service flags never became %d (now %d)" % (want, svc_flags(env)))


def test_xdp_counts_and_sheds_syns(env):
    env.add_peer("kx0")
    manifests = os.path.join(env.tmp, "models.yaml")
    with open(manifests, "w") as f:
        f.write(SHEDDABLE_MODEL)
    k = env.kepp(["--xdp-iface", "kx0", "--manifests", manifests, "--kernel-keep"])
    wait_scored(env)
    out = run(*env.nsenter(), "ip", "-j", "link", "show", "kx0")
    check("xdp" in out, "XDP attached to kx0: " + out)
    check(os.path.isdir(os.path.join(env.bpffs, "xdp")), "libxdp pinned into kepp's bpffs")
    # Not saturated: a client across the veth is served (through the proxy)
    # and counted.
    wait_flags(env, 1)  # sheddable, not saturated
    r = env.http(['{"prompt":"x"}'], ns=env.peer)[0]
    eq(json.loads(r["body"])["served_by"], "%s:%d" % (BEST, BE_PORT), "served across the veth")
    c = vip_counters(env)
    check(c["packets"] >= 4 and c["bytes"] > 200, "XDP counted the connection: %r" % c)
    eq(c["syn_shed"], 0, "nothing shed")
    # Every pod over the saturation thresholds: SYNs to the sheddable VIP drop.
    with open(env.load_file, "w") as f:
        f.write("50,0.99")
    wait_flags(env, 3)
    check(not env.connects(ns=env.peer), "SYN dropped while saturated")
    check(vip_counters(env)["syn_shed"] >= 1, "shed SYNs counted: %r" % vip_counters(env))
    os.unlink(env.load_file)
    wait_flags(env, 1)
    check(env.connects(ns=env.peer), "SYN passes once the pool has room")
    # /metrics carries what the kernel counted, and promtool accepts it.
    text = env.metrics()
    promtool(text)
    c = vip_counters(env)
    vip = '{vip="%s"}' % hostport(VIP, VIP_PORT)
    for name in ["kepp_kernel_connects_total", "kepp_kernel_backend_connects_total",
                 "kepp_kernel_backend_in_flight_connections", "kepp_kernel_vip_bytes_total",
                 "kepp_kernel_vip_packets_total", "kepp_kernel_vip_syn_shed_total",
                 "kepp_kernel_drained_connections_total"]:
        check("# TYPE %s " % name in text, "%s in /metrics:\n%s" % (name, text))
    got = sample(text, "kepp_kernel_vip_packets_total" + vip)
    check(got is not None and 0 < got <= c["packets"], "XDP packets in /metrics: %r" % got)
    check(sample(text, "kepp_kernel_vip_syn_shed_total" + vip) >= 1, "shed SYNs in /metrics")
    # A restarted kepp adopts the attached program (same pinned maps).
    k.stop()
    k2 = env.kepp(["--xdp-iface", "kx0", "--manifests", manifests])
    k2.wait_log("adopted the attached XDP program", 5)
    out = run(*env.nsenter(), "ip", "-j", "link", "show", "kx0")
    check("xdp" in out, "XDP still attached after the restart: " + out)


def test_affinity_margin_keeps_a_client_on_its_pod(env):
    env.kepp(["--fastpath-affinity-margin", "100", "--refresh-metrics-interval", "5s"])
    wait_scored(env)
    e = env.dump("kepp_svc_v1")[0].get("formatted", {})["value"]
    eq(e["flags"] & 4, 4, "affinity flag published")
    eq(e["affinity_pct"], 100, "affinity margin published")
    # Held connections from one client (cgroup): without affinity the live
    # in-flight correction spreads them (test_sockops_counts_inflight); with
    # a 100% margin the client stays on its first pod.
    p = env.client(n=4, hold=30, wait=False)
    answers = []
    while len(answers) < 4:
        line = p.stdout.readline()
        if not line:
            raise TestFailure("client died: %s" % p.stderr.read().decode(errors="replace"))
        if line.startswith(b"{"):
            answers.append(json.loads(line)["answer"])
    p.kill()
    p.wait()
    eq(answers, ["%s:%d" % (BEST, BE_PORT)] * 4, "every connection on the client's pod")
    aff = env.dump("kepp_aff_v1")
    eq(len(aff), 1, "one affinity entry (the test cgroup): %r" % aff)
    eq(addr_str(aff[0]["formatted"]["value"]["backend"]["ip"]), BEST, "remembered pod")


# Connections to the VIP held open: |n| made first, each asked once; then
# a line per connection the far end closes ({"closed": i, "err": ...}), and
# on stdin "ask" asks on every open one, "new" opens one more.
HOLDER = r"""
import errno, json, select, socket, sys
vip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def ask(s):
    s.sendall(b"GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        c = s.recv(4096)
        if not c:
            raise OSError("eof")
        data += c
    head, body = data.split(b"\r\n\r\n", 1)
    size = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0]
               .split(b":")[1])
    while len(body) < size:
        body += s.recv(4096)
    return body.decode()
socks = {}
def add():
    i = len(socks) + sum(1 for _ in closed)
    s = socket.create_connection((vip, port), timeout=5)
    socks[i] = s
    print(json.dumps({"conn": i, "answer": ask(s)}), flush=True)
closed = []
for _ in range(n):
    add()
while True:
    r = select.select(list(socks.values()) + [sys.stdin], [], [])[0]
    for s in r:
        if s is sys.stdin:
            cmd = sys.stdin.readline().strip()
            if not cmd:
                sys.exit(0)
            if cmd == "new":
                add()
            else:
                print(json.dumps({"alive": {i: ask(c) for i, c in socks.items()}}), flush=True)
            continue
        i = [k for k, v in socks.items() if v is s][0]
        try:
            err = "eof" if not s.recv(1) else "data"
        except OSError as e:
            err = errno.errorcode.get(e.errno, str(e))
        del socks[i]
        closed.append(i)
        print(json.dumps({"closed": i, "err": err}), flush=True)
"""


def read_json(p, timeout):
    """The next JSON line |p| prints within |timeout| seconds, or None."""
    import select
    r = select.select([p.stdout], [], [], timeout)[0]
    if not r:
        return None
    line = p.stdout.readline()
    if not line:
        raise TestFailure("client died: %s" % p.stderr.read().decode(errors="replace"))
    return json.loads(line)


POOL_MANIFEST = """\
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata:
  name: pool
  namespace: default
spec:
  targetPorts:
%s
  selector:
    matchLabels:
      app: vllm
  endpointPickerRef:
    name: pool-epp
    port:
      number: 9002
"""

LEAVER = "10.77.0.3:8001"


def write_pool(path, ports):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(POOL_MANIFEST % "".join("  - number: %d\n" % p for p in ports))
    os.rename(tmp, path)  # a new inode: the reload poll sees it at once


def test_drain_closes_connections_to_a_pod_that_left():
    with Env() as env:
        # 10.77.0.3 serves two ports: 8000 stays, 8001 is the pod that
        # leaves (the pool's targetPorts lose 8001). It starts the worst.
        env.backends({"10.77.0.1": (5, 0.8), BEST: (0, 0.1), "10.77.0.3": (5, 0.9)},
                     more=[("10.77.0.3", 8001, 8, 0.95)])
        pool = os.path.join(env.tmp, "pool.yaml")
        write_pool(pool, [8000, 8001])
        k = env.kepp(["--manifests", pool, "--pool-name", "pool", "--fastpath-drain", "2s"],
                     endpoints="10.77.0.1:8000,%s:8000,10.77.0.3" % BEST)
        wait_table = lambda best: until_table(env, lambda t: len(t) == 4 and t[0][0] == best)
        wait_table("%s:%d" % (BEST, BE_PORT))
        c = env.spawn([PY, "-c", HOLDER, VIP, str(VIP_PORT), "1"], cgroup=True,
                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        eq(read_json(c, 10), {"conn": 0, "answer": "%s:%d" % (BEST, BE_PORT)}, "live connection")
        # Now 8001 is the best: the next connection is pinned to it.
        with open(env.load_file + ".8001", "w") as f:
            f.write("0,0.01")
        wait_table(LEAVER)
        c.stdin.write(b"new\n")
        c.stdin.flush()
        eq(read_json(c, 10), {"conn": 1, "answer": LEAVER}, "connection to the pod that leaves")

        # It leaves and comes back within the grace period: nothing closes.
        write_pool(pool, [8000])
        k.wait_log("a backend left the pool", 5)
        write_pool(pool, [8000, 8001])
        k.wait_log("came back within the grace period", 5)
        eq(read_json(c, 1.5), None, "no connection closed for a pod that came back")
        c.stdin.write(b"ask\n")
        c.stdin.flush()
        eq(read_json(c, 5), {"alive": {"0": "%s:%d" % (BEST, BE_PORT), "1": LEAVER}},
           "both connections still served")

        # It leaves for good: its connection closes after the grace period,
        # the other one lives on.
        write_pool(pool, [8000])
        deadline = time.time() + 5
        while k.text().count("a backend left the pool") < 2:
            if time.time() > deadline:
                raise TestFailure("kepp never saw the pod leave again:\n" + k.text())
            time.sleep(0.05)
        t0 = time.time()
        eq(read_json(c, 1.5), None, "open during the grace period")
        ev = read_json(c, 3)
        check(ev is not None, "the pinned connection was closed after the grace period")
        took = time.time() - t0
        eq(ev["closed"], 1, "the connection to the pod that left closed")
        check(ev["err"] in ("ECONNABORTED", "ECONNRESET", "eof"), "reset or EOF: %r" % ev)
        check(1.5 <= took <= 4.5, "closed %.1fs after the pod left (grace 2s)" % took)
        c.stdin.write(b"ask\n")
        c.stdin.flush()
        eq(read_json(c, 5), {"alive": {"0": "%s:%d" % (BEST, BE_PORT)}}, "live one untouched")
        # The client reconnects through the fast path to a live pod.
        c.stdin.write(b"new\n")
        c.stdin.flush()
        eq(read_json(c, 5), {"conn": 2, "answer": "%s:%d" % (BEST, BE_PORT)}, "reconnected")
        c.stdin.close()
        c.wait(timeout=5)
        k.wait_log("closed the fast-path connections to a backend that left the pool", 2)
        check('"connections":"1"' in k.text(), "one connection drained:\n" + k.text())
        # Counted in /metrics, which promtool accepts.
        text = env.metrics()
        check("kepp_kernel_drained_connections_total 1\n" in text,
              "drained count in /metrics:\n" + text)
        promtool(text)
        # Its counters left with it.
        check(not any(a == LEAVER for a, _ in
                      [(hostport(addr_str(e["formatted"]["key"]["ip"]),
                                 socket.ntohs(e["formatted"]["key"]["port"])), 0)
                       for e in env.dump("kepp_be_v1")]),
              "kepp_be_v1 entry of the pod that left removed")
        k.stop()


def until_table(env, ok, timeout=10):
    deadline = time.time() + timeout
    table = []
    while time.time() < deadline:
        table = svc_table(env, ports=True)
        if ok(table):
            return table
        time.sleep(0.1)
    raise TestFailure("the published table never matched: %r" % (table,))
