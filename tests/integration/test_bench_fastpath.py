"""The kernel fast-path benchmark (tools/bench/fastpath) runs end to end: a
--smoke run creates its network namespace, cgroup and bpffs, starts its C
pods and kepp --kernel=on, measures every path (direct to a pod, through the
fast path, through kepp's fallback proxy) and removes everything again.

Needs root (like test_kernel.py): without it the test fails with the
reason, under CI=true or not; it never skips."""
import json
import os
import subprocess
import sys
import tempfile

import envoy
from envoy import check, eq
from test_kernel import require_privileges

RUN = os.path.join(envoy.ROOT, "tools", "bench", "fastpath", "run.py")
PATHS = ["direct", "direct-cg", "fastpath", "proxy"]


def netns_names():
    out = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE).stdout.decode()
    return sorted(line.split()[0] for line in out.splitlines() if line.startswith("kepp-fpb-"))


def test_bench_fastpath_smoke():
    require_privileges()
    before = netns_names()
    with tempfile.TemporaryDirectory(prefix="kepp-fpb-it-") as tmp:
        out = os.path.join(tmp, "fp.json")
        p = subprocess.run([sys.executable, RUN, "--build", envoy.BUILD_DIR, "--smoke",
                            "--json", out],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=90)
        text = p.stdout.decode("utf-8", "replace")
        eq(p.returncode, 0, "bench exit status; output:\n" + text)
        check("### Goals" in text and "| fastpath |" in text, "no tables:\n" + text)
        with open(out) as f:
            res = json.load(f)
    runs = res["runs"]
    eq(sorted(set((r["path"], r["concurrency"]) for r in runs)),
       sorted((p, c) for p in PATHS for c in (1, 16)), "runs")
    pods = {"10.79.0.%d:8000" % i for i in (1, 2, 3)}
    for r in runs:
        what = "%s x%d" % (r["path"], r["concurrency"])
        check(r["conns"] > 0, what + ": no connections")
        eq(r["errors"], 0, what + " errors (%s)" % r["first_error"])
        check(set(r["served_by"]) <= pods, what + ": served by %r" % r["served_by"])
        eq(r["via_kepp"], r["conns"] if r["path"] == "proxy" else 0,
           what + ": answers through kepp's proxy")
        check(0 < r["first_p50_us"] <= r["first_p99_us"], what + ": percentiles %r" % r)
    # The fast path spreads over the pods kepp rated alike; direct hits one.
    fast = [r for r in runs if r["path"] == "fastpath" and r["concurrency"] == 16][0]
    check(len(fast["served_by"]) > 1, "fast path used one pod: %r" % fast["served_by"])
    s = res["summary"]
    for p in PATHS:
        check(s[p]["cps"] > 0 and s[p]["p50_us"] > 0, "summary of %s: %r" % (p, s[p]))
    # Nothing left behind: its netns is gone (its cgroup and bpffs with it).
    eq(netns_names(), before, "benchmark network namespaces left")
