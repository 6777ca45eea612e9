"""The routing-quality benchmark (tools/bench/routing) runs end to end: a
--smoke run starts the simulator and kepp per policy, sends every workload
through kepp's ext_proc picks and to the pods, and writes its numbers."""
import json
import os
import subprocess
import sys
import tempfile

import envoy
from envoy import check, eq

BENCH = os.path.join(envoy.ROOT, "tools", "bench", "routing", "bench.py")


def test_bench_routing_smoke():
    with tempfile.TemporaryDirectory(prefix="kepp-bench-it-") as tmp:
        out = os.path.join(tmp, "runs.json")
        p = subprocess.run([sys.executable, BENCH, "--build", envoy.BUILD_DIR, "--smoke",
                            "--base-addr", "127.0.6.1", "--json", out],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        text = p.stdout.decode("utf-8", "replace")
        eq(p.returncode, 0, "bench exit status; output:\n" + text)
        for w in ("prefix", "sharegpt", "lora"):
            check("### Workload `%s`" % w in text, "no table for %s:\n%s" % (w, text))
        with open(out) as f:
            runs = json.load(f)
    eq(sorted((r["workload"], r["policy"]) for r in runs),
       [("lora", "kepp-lora"), ("lora", "round-robin"), ("prefix", "kepp"),
        ("prefix", "round-robin"), ("sharegpt", "kepp"), ("sharegpt", "round-robin")],
       "runs")
    for r in runs:
        what = "%s/%s" % (r["workload"], r["policy"])
        check(r["requests"] > 0, what + ": no requests")
        eq(r["ok"], r["requests"], what + " requests answered in full (errors %s)" % r["errors"])
        eq(r["exit"], {"kepp": 0, "sim": 0} if r["policy"].startswith("kepp") else {"sim": 0},
           what + " exit codes")
        check(sum(r["picks"].values()) == r["requests"], what + ": every request has a pod")
        eq(r["sim_requests"], r["requests"], what + ": requests the simulator finished")
        check(r["cache_queries"] > 0, what + ": no prompt tokens in the simulator's counters")
        if r["workload"] == "lora":
            check(r["lora_loads"] > 0, what + ": no adapter was loaded")
        if r["policy"] == "round-robin":
            counts = sorted(r["picks"].values())
            check(counts[-1] - counts[0] <= 1, what + ": round-robin picks %s" % r["picks"])
