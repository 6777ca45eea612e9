"""The kernel fast path in Kubernetes mode: the InferencePool's
kepp.io/fastpath annotation ("VIP:PORT=MODEL,...") is the fast-path service
set, live. kepp reads the pool from the fake API server
(tests/k8s/fake_apiserver.py, listening inside the test's network namespace)
and runs its real datapath in that namespace and a cgroup the test creates
(test_kernel.Env): the annotation creates a service (connections to the VIP
land on the best pod), an update changes a model and adds a port, a
malformed value keeps the services in force and says why, removal stops
steering at once, --fastpath flags merge with the annotation (a flag wins),
the fallback proxy follows the same live set (a client outside the cgroup
gets the annotation's model filled in, the new one after a change, and
none once the service is gone), a restarted kepp keeps the annotation's
services until it has read the pool again, and deploy/examples/fastpath/
works as shipped.

Needs root, bpffs and cgroup2, as test_kernel (a BPF test never skips in
silence)."""
import contextlib
import ctypes
import json
import os
import socket
import subprocess
import sys
import time

import yaml

import envoy
from envoy import TestFailure, check, eq
import test_kernel as tk

sys.path.insert(0, os.path.join(envoy.ROOT, "tests", "k8s"))
import fake_apiserver as fa  # noqa: E402

POOL = "pool"
SEL = {"app": "vllm"}
ANN = "kepp.io/fastpath"
VIP = tk.VIP
BEST = "%s:%d" % (tk.BEST, tk.BE_PORT)
OWN = "%s:%d" % (VIP, tk.VIP_PORT)  # the VIP's own listener: not steered
KEPP_SVC_SHEDDABLE = 1

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def in_netns(name):
    """Runs the block with this thread in network namespace |name|: sockets
    made there (the fake API server's listener) stay in it."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open("/run/netns/" + name, os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns " + name)
        try:
            yield
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(own)
        os.close(target)


class Fx:
    def __init__(self, env, api):
        self.env, self.api = env, api
        self.kc = api.kubeconfig(os.path.join(api.tmp, "kubeconfig"))

    def kepp(self, extra=(), wait=True, pool=POOL):
        k = K8sKepp(self.env, self.kc, extra, pool)
        self.env.kepps.append(k)
        if wait:
            k.start()
        return k

    def pool(self, annotation=None, v1alpha2=False):
        ann = {ANN: annotation} if annotation is not None else None
        if v1alpha2:
            return self.api.create(fa.pool_v1alpha2(POOL, SEL, tk.BE_PORT, annotations=ann))
        return self.api.create(fa.pool_v1(POOL, SEL, [tk.BE_PORT], annotations=ann))

    def annotate(self, pool, value):
        """Sets the annotation (None: removes it)."""
        def fn(o):
            a = o["metadata"].setdefault("annotations", {})
            if value is None:
                a.pop(ANN, None)
            else:
                a[ANN] = value
        return self.api.patch(pool, fn)


class K8sKepp(tk.KernelKepp):
    """kepp reading its pool from the API server, with no --endpoints."""

    def __init__(self, env, kubeconfig, extra, pool=POOL):
        super().__init__(env, ())
        self.args = [tk.KEPP, "--secure-serving=false", "--kernel=on", "--workers", "1",
                     "--grpc-port", str(envoy.free_port()),
                     "--grpc-health-port", str(envoy.free_port()),
                     "--pool-name", pool, "--kubeconfig", kubeconfig,
                     "--bpffs", env.bpffs, "--cgroup", env.cg,
                     "--drain-timeout", "1s", "--v", "3"] + list(extra)

    def lines(self, *words):
        out = []
        for line in self.text().splitlines():
            if all(w in line for w in words):
                out.append(json.loads(line))
        return out


@contextlib.contextmanager
def k8s_fastpath():
    with tk.Env() as env:
        env.backends(tk.LOADS)
        with in_netns(env.ns):
            api = fa.FakeAPIServer(bookmark_interval=1.0)
        try:
            for i, ip in enumerate(tk.BACKENDS):
                api.create(fa.pod("p%d" % i, ip, SEL))
            api.create(fa.model("batch", "batch", POOL, "Sheddable"))
            yield Fx(env, api)
        finally:
            api.close()


FIXTURES = {"fx": k8s_fastpath}


def tables(env):
    """The published tables: {"vip:port": kepp_svc value}."""
    out = {}
    for e in env.dump("kepp_svc_v1"):
        f = e.get("formatted", e)
        vip = f["key"]["vip"]
        out[tk.hostport(tk.addr_str(vip["ip"]), socket.ntohs(vip["port"]))] = f["value"]
    return out


def best_of(v):
    """The best-weighted backend of a table, or None when it has none."""
    if not v["n_backends"]:
        return None
    be = max(v["be"][:v["n_backends"]], key=lambda b: b["weight"])
    return tk.addr_str(be["addr"]["ip"])


def wait_tables(env, want, timeout=10):
    """Waits until the services are exactly |want| (a set of "vip:port"),
    each scored with the best pod on top."""
    deadline = time.time() + timeout
    t = {}
    while time.time() < deadline:
        t = tables(env)
        if set(t) == set(want) and all(best_of(v) == tk.BEST for v in t.values()):
            return t
        time.sleep(0.1)
    raise TestFailure("services never became %r: %r" % (sorted(want), {
        k: (v["n_backends"], v["flags"]) for k, v in t.items()}))


def until(what, fn, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if fn():
            return
        time.sleep(0.1)
    raise TestFailure("timed out waiting for " + what)


def answer(env, port=tk.VIP_PORT):
    """Who answers a connection to VIP:|port| from the cgroup: "ip:port",
    or None when nothing does."""
    p = env.spawn([tk.PY, "-c", tk.CLIENT, VIP, str(port), "1", "0"], cgroup=True,
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, _ = p.communicate(timeout=20)
    lines = [json.loads(x) for x in out.decode().splitlines() if x.startswith("{")]
    if p.returncode != 0 or not lines:
        return None
    eq(lines[0]["peer"], [VIP, port], "getpeername() shows the VIP")
    return lines[0]["answer"]


def test_annotation_is_the_live_service_set(fx):
    env = fx.env
    pool = fx.pool("%s:80=m" % VIP)
    k = fx.kepp()
    # The annotation creates the service: connect() lands on the best pod.
    t = wait_tables(env, {"%s:80" % VIP})
    eq(t["%s:80" % VIP]["flags"] & KEPP_SVC_SHEDDABLE, 0, "model m has no InferenceModel")
    for _ in range(3):
        eq(answer(env), BEST, "steered by the annotation's service")
    eq(answer(env, 81), None, "no service and no listener on port 81 yet")
    check(k.lines("fast-path service added", '"service":"%s:80"' % VIP, '"model":"m"'),
          "a line says the service was added:\n" + k.text())

    # An update: port 80 serves another model (a Sheddable InferenceModel,
    # which the table's flags show), and a second port of the same VIP.
    fx.annotate(pool, " %s:80=batch ,  %s:81=m " % (VIP, VIP))
    until("port 80 on the sheddable model",
          lambda: tables(env).get("%s:80" % VIP, {}).get("flags", 0) & KEPP_SVC_SHEDDABLE)
    wait_tables(env, {"%s:80" % VIP, "%s:81" % VIP})
    eq(answer(env, 81), BEST, "the new port is steered")
    eq(answer(env), BEST, "port 80 still steered")
    check(k.lines("fast-path service changed", '"model":"batch"', '"was":"m"'),
          "a line says the model changed:\n" + k.text())

    # Malformed: refused with the pool, the annotation and the reason; the
    # services in force stay and keep steering.
    bad = "%s:80=batch, %s:82" % (VIP, VIP)
    fx.annotate(pool, bad)
    until("the refusal", lambda: k.lines("invalid kepp.io/fastpath annotation"))
    line = k.lines("invalid kepp.io/fastpath annotation")[0]
    eq(line.get("pool"), "default/" + POOL, "the pool named")
    eq(line.get("annotation"), bad, "the annotation quoted")
    check("want VIP:PORT=MODEL" in line.get("error", ""), "the reason: %r" % line)
    eq(line.get("level"), "error", "an error line")
    time.sleep(0.5)
    t = wait_tables(env, {"%s:80" % VIP, "%s:81" % VIP})
    check(t["%s:80" % VIP]["flags"] & KEPP_SVC_SHEDDABLE, "port 80 keeps its model")
    eq(answer(env, 81), BEST, "still steered after the refusal")

    # Removed: nothing is steered any more, at once (the maps lose the
    # services, they do not wait to go stale).
    fx.annotate(pool, None)
    until("no service", lambda: tables(env) == {})
    eq(answer(env), OWN, "port 80: the VIP's own listener answers")
    eq(answer(env, 81), None, "port 81: nothing listens on the VIP itself")
    check(k.lines("fast-path service removed", '"service":"%s:81"' % VIP),
          "a line says the service was removed:\n" + k.text())
    check(k.proc.poll() is None, "kepp serves on")

    # And back: a new annotation steers again without a restart.
    fx.annotate(pool, "%s:80=m" % VIP)
    wait_tables(env, {"%s:80" % VIP})
    eq(answer(env), BEST, "steered again")
    k.stop()  # exit code 0 (and under ASan: no leak)


# One keep-alive HTTP connection to VIP:PORT: POSTs each line of stdin as
# the body and prints each answer as a JSON line; |local| (the client's
# port) tells which connection carried it (http.client reconnects after
# Connection: close).
POSTER = r"""
import http.client, json, sys
c = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=10)
for line in sys.stdin:
    c.request("POST", "/v1/completions", body=line.strip().encode(),
              headers={"Content-Type": "application/json"})
    local = c.sock.getsockname()[1]
    r = c.getresponse()
    print(json.dumps({"status": r.status, "via": r.getheader("Via"), "body": r.read().decode(),
                      "connection": r.getheader("Connection"), "local": local}), flush=True)
"""


class Poster:
    """POSTER from outside the cgroup: connect() does not steer it, so
    sk_lookup hands its connection to kepp's fallback proxy."""

    def __init__(self, env, port=tk.VIP_PORT):
        self.p = env.spawn([tk.PY, "-c", POSTER, VIP, str(port)], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def post(self, body):
        self.p.stdin.write(body.encode() + b"\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            raise TestFailure("the client died: %s" % self.p.stderr.read().decode(errors="replace"))
        r = json.loads(line)
        try:
            r["json"] = json.loads(r["body"])
        except ValueError:
            r["json"] = None
        return r

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=10)


def test_fallback_proxy_follows_the_annotation(fx):
    env = fx.env
    pool = fx.pool("%s:80=m" % VIP)
    k = fx.kepp()  # no --fastpath flag: the proxy starts with no service
    wait_tables(env, {"%s:80" % VIP})
    c = Poster(env)
    r = c.post('{"prompt":"hi"}')
    eq(r["status"], 200, "answered: %r" % r)
    eq(r["via"], "1.1 kepp", "through the fallback proxy")
    eq(r["json"]["served_by"], BEST, "the best-scored pod")
    eq(r["json"]["model"], "m", "the annotation's model filled in")
    conn = r["local"]

    # The model changes: the next request, on the same connection, gets the
    # new one (the Sheddable InferenceModel "batch"; the flags show kepp
    # applied the change).
    fx.annotate(pool, "%s:80=batch" % VIP)
    until("port 80 on the sheddable model",
          lambda: tables(env).get("%s:80" % VIP, {}).get("flags", 0) & KEPP_SVC_SHEDDABLE)
    r = c.post('{"prompt":"again"}')
    eq((r["status"], r["local"]), (200, conn), "the same connection: %r" % r)
    eq(r["json"]["model"], "batch", "the new model filled in")
    eq(r["connection"], None, "kept alive")
    r = c.post('{"model":"m","prompt":"named"}')
    eq(r["json"]["model"], "m", "a body's own model is kept")
    r2 = Poster(env)
    eq(r2.post('{"prompt":"new connection"}')["json"]["model"], "batch", "a new connection too")
    r2.close()

    # Removed: sk_lookup no longer hands the VIP to the proxy; the
    # connection it already has is answered as one for no service (a body
    # without a model is refused) and closed, so the client's next
    # connection goes to the VIP's own listener.
    fx.annotate(pool, None)
    until("no service", lambda: tables(env) == {})
    r = c.post('{"prompt":"gone"}')
    eq((r["status"], r["local"]), (400, conn), "no model filled in any more: %r" % r)
    eq(r["body"], "inference error: BadRequest - model not found in request body", "spec §2.8")
    eq(r["connection"], "close", "the connection closes")
    r = c.post('{"model":"m","prompt":"after"}')
    check(r["local"] != conn, "a new connection: %r" % r)
    eq(r["via"], None, "not through the proxy")
    eq(r["json"]["served_by"], OWN, "the VIP's own listener answers")
    c.close()
    k.stop()


def test_flags_merge_with_the_annotation(fx):
    env = fx.env
    # A v1alpha2 pool carries the same annotation.
    pool = fx.pool("%s:80=batch,%s:81=m" % (VIP, VIP), v1alpha2=True)
    k = fx.kepp(["--pool-group", "inference.networking.x-k8s.io",
                 "--fastpath", "%s:80=m" % VIP])
    t = wait_tables(env, {"%s:80" % VIP, "%s:81" % VIP})
    eq(t["%s:80" % VIP]["flags"] & KEPP_SVC_SHEDDABLE, 0, "the flag's model wins on port 80")
    warn = k.lines("a --fastpath flag wins on the same VIP:PORT")
    eq(len(warn), 1, "one warning:\n" + k.text())
    eq(warn[0].get("services"), "%s:80" % VIP, "naming the VIP:PORT")
    eq(answer(env, 81), BEST, "the annotation's port is steered")
    # The annotation gone: its own service goes, the flag's stays.
    fx.annotate(pool, None)
    wait_tables(env, {"%s:80" % VIP})
    eq(answer(env), BEST, "the flag's service still steers")
    eq(answer(env, 81), None, "the annotation's port is gone")
    eq(len(k.lines("a --fastpath flag wins")), 1, "no new warning without a clash")


def test_restart_keeps_annotation_services_until_the_pool_is_read(fx):
    env = fx.env
    fx.pool("%s:80=m,%s:81=m" % (VIP, VIP))
    k = fx.kepp(["--kernel-keep"])
    wait_tables(env, {"%s:80" % VIP, "%s:81" % VIP})
    k.stop()
    # The next kepp cannot read the pool yet: the services a previous kepp
    # published stay (stale tables hand connections to the fallback proxy)
    # rather than vanish.
    fx.api.forbid("inferencepools")
    k2 = fx.kepp(["--kernel-keep"])
    time.sleep(1.0)
    eq(set(tables(env)), {"%s:80" % VIP, "%s:81" % VIP}, "services kept while the pool is unknown")
    check(not k2.lines("fast-path service removed"), "nothing removed:\n" + k2.text())
    # Their connections reach the fallback proxy, which knows their model
    # from kepp_model_v1 (without it: 400 "model not found"); with no pool
    # read there is no pod to pick yet.
    c = Poster(env, 81)
    r = c.post('{"prompt":"hi"}')
    c.close()
    eq(r["via"], "1.1 kepp", "through the fallback proxy: %r" % r)
    check(r["status"] == 503 and "model not found" not in r["body"],
          "the adopted service's model, no pod yet: %r" % r)
    fx.api.allow("inferencepools")
    before = {kk: v["published_ns"] for kk, v in tables(env).items()}
    until("republished", lambda: all(v["published_ns"] > before[kk]
                                     for kk, v in tables(env).items()))
    wait_tables(env, {"%s:80" % VIP, "%s:81" % VIP})
    eq(answer(env, 81), BEST, "steered after the restart")


def test_deploy_example(fx):
    """deploy/examples/fastpath/inferencepool.yaml with the DaemonSet's flag."""
    with open(os.path.join(envoy.ROOT, "deploy", "examples", "fastpath", "inferencepool.yaml")) as f:
        pool = yaml.safe_load(f)
    name = pool["metadata"]["name"]
    fx.api.create(pool)
    labels = pool["spec"]["selector"]["matchLabels"]
    for i, ip in enumerate(tk.BACKENDS):
        fx.api.create(fa.pod("vllm-%d" % i, ip, labels))
    k = fx.kepp(["--fastpath", "10.96.0.50:8000=meta-llama/Llama-3.1-8B-Instruct"], pool=name)
    wait_tables(fx.env, {"10.96.0.50:8000", "10.96.0.50:8001", "10.96.0.50:8002"})
    check(k.lines("fast-path service added", "10.96.0.50:8002", "food-review-2"), k.text())
    eq(k.lines("a --fastpath flag wins"), [], "no clash with the DaemonSet's flag")
