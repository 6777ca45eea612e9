"""Kernel fast path faults (issue 7's matrix): connections that the fast path
steered keep flowing when kepp is killed with -9 (they are plain sockets to
the pod, and the pinned programs stay attached: getpeername still shows the
VIP, sockops still counts), and a kepp started again adopts the pinned state
while those connections live on."""
import json
import os
import subprocess

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


def test_connections_survive_kill_9_and_restart():
    with tk.Env() as env:
        env.backends(tk.LOADS)
        k = env.kepp()
        tk.wait_scored(env)
        def join():
            with open(os.path.join(env.cg, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        p = subprocess.Popen(env.nsenter() + [tk.PY, "-c", KEEPALIVE, env.vip, str(tk.VIP_PORT)],
                             preexec_fn=join, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        env.procs.append(p)
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
