"""The ext_proc load benchmark keeps working: $BUILD/bench-extproc drives kepp
(over simulated endpoints) and $BUILD/bench-nullxp for a second or two each
and must report sane numbers (tools/bench/extproc)."""
import json
import os
import signal
import socket
import subprocess
import time

import envoy
from envoy import TestFailure, check, eq
from test_sim import Sim

BENCH = os.path.join(envoy.BUILD_DIR, "bench-extproc")
NULLXP = os.path.join(envoy.BUILD_DIR, "bench-nullxp")


def bench(port, pid, *extra, duration=1.5):
    if not os.access(BENCH, os.X_OK):
        raise TestFailure("%s is missing: build it first" % BENCH)
    args = [BENCH, "--port", str(port), "--pid", str(pid), "--json", "--duration",
            str(duration), "--warmup", "0.3", "--conns", "2", "--streams", "8"] + list(extra)
    out = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    if out.returncode != 0:
        raise TestFailure("bench-extproc %s failed (%d): %s" % (
            " ".join(extra), out.returncode, out.stderr.decode()))
    return json.loads(out.stdout.decode().strip().splitlines()[-1])


def sane(r, what, max_endpoints):
    """Numbers a working benchmark reports: requests, ordered percentiles,
    CPU and memory of the server, picks within the pool."""
    eq(r["errors"], 0, "%s: errors %s (grpc-message %r)" % (what, r["error_kinds"],
                                                             r["grpc_message"]))
    check(r["ok"] >= 100 and r["rps"] > 50, "%s: only %s requests (%s req/s)"
          % (what, r["ok"], r["rps"]))
    d = r["decision_us"]
    check(0 < d["p50"] <= d["p90"] <= d["p99"] <= d["p999"] <= d["max"],
          "%s: decision percentiles out of order: %s" % (what, d))
    check(d["p50"] < 1e6, "%s: decision p50 %s us" % (what, d["p50"]))
    t = r["total_ms"]
    check(0 < t["p50"] <= t["p99"], "%s: request percentiles %s" % (what, t))
    check(r["server_cpu_s"] is not None and r["server_cpu_s"] > 0 and r["cpu_us_per_req"] > 0,
          "%s: no server CPU measured: %s" % (what, r["server_cpu_s"]))
    check(r["hwm_kb"] > 1000 and r["rss_kb"] > 1000, "%s: VmHWM %s kB, VmRSS %s kB"
          % (what, r["hwm_kb"], r["rss_kb"]))
    check(1 <= r["endpoints_picked"] <= max_endpoints, "%s: %d endpoints picked of %d"
          % (what, r["endpoints_picked"], max_endpoints))


def test_bench_drives_kepp_over_live_endpoints():
    with Sim(instances=4) as sim:
        eps = ["%s:%d" % (a, sim.port) for a in sim.addrs]
        with envoy.Kepp(endpoints=eps, workers=1) as k:
            time.sleep(0.2)  # first scrapes
            r = bench(k.grpc_port, k.proc.pid, "--body", "1k", "--idle", "0.2")
            sane(r, "kepp 1 KB", 4)
            check(r["idle_cpu_pct"] is not None, "idle CPU not sampled")
            # Every phase: 16 KB in 4 KB chunks ended by trailers, then the
            # response headers and body; an open-loop rate.
            r = bench(k.grpc_port, k.proc.pid, "--body", "16k", "--chunk", "4k", "--trailers",
                      "--response", "--rate", "300", "--rss-every", "0.5")
            sane(r, "kepp 16 KB, trailers, response phases", 4)
            check(abs(r["rps"] - 300) < 60, "open loop at 300 req/s ran at %s" % r["rps"])
            check(len(r["rss_series"]) >= 2, "RSS series %s" % r["rss_series"])
            check(k.alive(), "kepp died under the benchmark")


def test_bench_drives_the_null_server_h2c_and_tls():
    if not os.access(NULLXP, os.X_OK):
        raise TestFailure("%s is missing: build it first" % NULLXP)
    for tls in (False, True):
        port = envoy.free_port()
        args = [NULLXP, "--port", str(port), "--endpoint", "10.9.8.7:8000"]
        if tls:
            args.append("--tls")
        p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        try:
            deadline = time.time() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if p.poll() is not None:
                        raise TestFailure("bench-nullxp exited with %d: %s"
                                          % (p.returncode, p.stderr.read().decode()))
                    if time.time() > deadline:
                        raise TestFailure("bench-nullxp never listened on %d" % port)
                    time.sleep(0.05)
            extra = ["--tls"] if tls else []
            r = bench(port, p.pid, "--body", "256k", "--response", *extra, duration=1)
            sane(r, "nullxp 256 KB %s" % ("TLS" if tls else "h2c"), 1)
            eq(r["tls"], tls, "tls flag in the report")
        finally:
            p.send_signal(signal.SIGTERM)
            try:
                rc = p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                raise TestFailure("bench-nullxp did not exit on SIGTERM")
            p.stderr.close()
        eq(rc, 0, "bench-nullxp exit status")
