"""Kernel fast path faults (issue 7's matrix): connections that the fast path
steered keep flowing when kepp is killed with -9 (they are plain sockets to
the pod, and the pinned programs stay attached: getpeername still shows the
VIP, sockops still counts), and a kepp started again adopts the pinned state
while those connections live on; the same through an upgrade from a kepp
built with another map layout, and through a clean exit that removes the
fast path."""
import json
import os
import subprocess

import envoy
from envoy import TestFailure, check, eq
import test_kernel as tk

# One keep-alive connection to the VIP: a request, then one more each time a
# line arrives on stdin; prints the answer and the peer each time.
KEEPALIVE = r"""
import json, socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
def ask():
    s.sendall(b"GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    head, body = data.split(b"\r\n\r\n", 1)
    n = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0]
            .split(b":")[1])
    while len(body) < n:
        body += s.recv(4096)
    print(json.dumps({"answer": body.decode(), "peer": list(s.getpeername()[:2])}), flush=True)
ask()
for line in sys.stdin:
    ask()
"""


def ask(p):
    p.stdin.write(b"again\n")
    p.stdin.flush()
    line = p.stdout.readline()
    if not line:
        raise TestFailure("the connection died: %s" % p.stderr.read().decode(errors="replace"))
    return json.loads(line)


def keepalive(env):
    """A keep-alive connection to the VIP from the cgroup (KEEPALIVE)."""
    def join():
        with open(os.path.join(env.cg, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    p = subprocess.Popen(env.nsenter() + [tk.PY, "-c", KEEPALIVE, env.vip, str(tk.VIP_PORT)],
                         preexec_fn=join, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    env.procs.append(p)
    return p


def test_connections_survive_kill_9_and_restart():
    with tk.Env() as env:
        env.backends(tk.LOADS)
        k = env.kepp()
        tk.wait_scored(env)
        p = keepalive(env)
        first = json.loads(p.stdout.readline())
        best = "%s:%d" % (tk.BEST, tk.BE_PORT)
        eq(first["answer"], best, "steered at connect")
        k.kill()  # SIGKILL: no cleanup at all
        for _ in range(3):
            r = ask(p)
            eq(r["answer"], best, "the same pod after kill -9")
            eq(r["peer"], [env.vip, tk.VIP_PORT], "getpeername still shows the VIP")
        k2 = env.kepp()
        check("adopted a pinned BPF link" in k2.text(), "restart adopts:\n" + k2.text())
        tk.wait_scored(env)
        eq(ask(p)["answer"], best, "the same connection after the restart")
        # sockops kept counting it through the kill and the restart.
        counts = tk.inflight(env)
        check(counts.get(tk.BEST, {}).get("inflight", 0) >= 1,
              "sockops still counts the live connection: %r" % counts)
        p.stdin.close()
        p.wait(timeout=10)
        k2.stop()


def build_older_kepp(tmp):
    """kepp built from this tree with another BPF map layout, as an older
    release would have: KEPP_MAX_SERVICES=128 gives kepp_svc_v1,
    kepp_vip_v1 and kepp_model_v1 another max_entries, and the BPF objects
    differ. Returns the binary's path."""
    build = os.path.join(tmp, "build-older")
    p = subprocess.run(["make", "-C", envoy.ROOT, "-j2", "BUILD=" + build,
                        "CFLAGS=-DKEPP_MAX_SERVICES=128", os.path.join(build, "kepp")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=150)
    if p.returncode != 0:
        raise TestFailure("building the older kepp failed:\n" + p.stdout.decode(errors="replace"))
    return os.path.join(build, "kepp")


def test_upgrade_from_an_older_build_keeps_connections():
    with tk.Env() as env:
        env.backends(tk.LOADS)
        older = build_older_kepp(env.tmp)  # removed with env.tmp
        k = tk.KernelKepp(env, ["--kernel-keep"])
        k.args[0] = older
        env.kepps.append(k)
        k.start()
        tk.wait_scored(env)
        eq(tk.map_info(env, "kepp_svc_v1")["max_entries"], 128, "the older layout")
        best, vip = "%s:%d" % (tk.BEST, tk.BE_PORT), [env.vip, tk.VIP_PORT]
        p = keepalive(env)
        eq(json.loads(p.stdout.readline()), {"answer": best, "peer": vip}, "steered by the older")
        # The rolling update: the older kepp exits keeping the datapath, the
        # newer one starts and adopts it.
        k.stop()
        eq(ask(p), {"answer": best, "peer": vip}, "between the two")
        k2 = env.kepp()
        text = k2.text()
        recreated = sorted(json.loads(l)["map"] for l in text.splitlines()
                           if "another layout" in l)
        eq(recreated, ["kepp_model_v1", "kepp_svc_v1", "kepp_vip_v1"],
           "maps of the older layout re-created:\n" + text)
        check("max_entries 128, this kepp uses 256" in text, text)
        check("adopted a pinned BPF link" in text, "programs replaced in place:\n" + text)
        eq(tk.map_info(env, "kepp_svc_v1")["max_entries"], 256, "the newer layout")
        eq(len(tk.cgroup_progs(env)), 5, "one attachment per program")
        tk.wait_scored(env)
        # The connection lives on; the newer getpeername reads its socket
        # state (kepp_sk_v1 was compatible, so reused); sockops still counts it.
        eq(ask(p), {"answer": best, "peer": vip}, "the same connection after the upgrade")
        check(tk.inflight(env).get(tk.BEST, {}).get("inflight", 0) >= 1,
              "still counted in flight: %r" % tk.inflight(env))
        for c in env.client(n=2):
            eq(c["answer"], best, "new connections steered by the newer kepp")
        # A clean exit without --kernel-keep removes the fast path; the
        # steered connection keeps its pod (getpeername now shows the pod).
        k2.stop()
        eq(tk.pins(env), None, "pins removed")
        eq(ask(p), {"answer": best, "peer": [tk.BEST, tk.BE_PORT]}, "alive after the removal")
        p.stdin.close()
        p.wait(timeout=10)
