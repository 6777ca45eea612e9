"""Model-server faults: a pod whose /metrics fails, hangs or answers garbage
(a dead pod, from kepp's side) stops getting picks once its metrics pass
--metrics-staleness-threshold; a pod killed while it streams an answer
releases its in-flight requests when Envoy resets their streams and stops
getting picks the same way; with every pod stale kepp fails open; no
request waits on a scrape; a saturated pool sheds and an empty subset is a
503, never a hang."""
import http.client
import json
import time

import grpc

import envoy
from envoy import check, eq, kind, resp_body, resp_headers, set_headers, streamed
from test_extproc import POOL_V1, objective, route
from test_picks import pick
from test_sim import Sim, completion

THRESHOLD = 0.4  # seconds
STALE = ["--metrics-staleness-threshold", "%dms" % (THRESHOLD * 1000)]


def picks_of(k, n=24):
    return [pick(k, prompt="question %d" % i) for i in range(n)]


def wait_until(cond, what, timeout=5):
    deadline = time.time() + timeout
    while not cond():
        check(time.time() < deadline, what)
        time.sleep(0.05)


def test_pod_with_failing_metrics_left_out():
    for fault in ({"metrics": "fail"}, {"metrics": "garbage"},
                  {"metrics": "slow", "metrics_delay_ms": 5000}):
        with Sim(instances=3) as sim:
            eps = ["%s:%d" % (a, sim.port) for a in sim.addrs]
            with envoy.Kepp(endpoints=eps, extra=STALE) as k:
                wait_until(lambda: len(set(picks_of(k, 12))) > 1, "picks spread at first")
                sim.post(sim.addrs[0], "/sim/fault", fault)
                time.sleep(0.6)  # past the threshold
                picks = picks_of(k)
                check(eps[0] not in picks, "%s: picks still go to the pod: %s" % (fault, picks))
                # No decision waited on the hanging scrape.
                t0 = time.time()
                pick(k)
                check(time.time() - t0 < 0.5, "a pick took %.3fs" % (time.time() - t0))
                # Healed: it comes back.
                sim.post(sim.addrs[0], "/sim/fault", {"metrics": "ok"})
                wait_until(lambda: eps[0] in picks_of(k, 12), "%s: pod never came back" % fault,
                           timeout=8)


def test_stale_pods_kept_when_disabled_or_all_stale():
    with Sim(instances=3) as sim:
        eps = ["%s:%d" % (a, sim.port) for a in sim.addrs]
        with envoy.Kepp(endpoints=eps, extra=STALE + ["--exclude-stale-endpoints=false"]) as k:
            sim.post(sim.addrs[0], "/sim/fault", {"metrics": "fail"})
            time.sleep(0.6)
            # Its last metrics say idle: the reference's behaviour keeps it.
            wait_until(lambda: eps[0] in picks_of(k, 12), "stale pod left out while disabled")
        with envoy.Kepp(endpoints=eps, extra=STALE) as k:
            for a in sim.addrs:
                sim.post(a, "/sim/fault", {"metrics": "fail"})
            time.sleep(0.6)
            picks = set(picks_of(k, 30))
            eq(picks, set(eps), "every pod stale: all stay candidates")


def test_every_pod_dead_sheds_or_503_at_once():
    """Every pod's metrics failing: stale metrics count as saturated (spec
    §5.2), so sheddable requests get 429 at once and others still get a
    pick; a subset hint naming no pool member is a 503. Nothing hangs."""
    manifests = POOL_V1 + objective("batch", -1) + objective("interactive", 5)
    with Sim(instances=2) as sim:
        eps = ["%s:%d" % (a, sim.port) for a in sim.addrs]
        with envoy.Kepp(endpoints=eps, manifests=manifests, extra=STALE) as k:
            for a in sim.addrs:
                sim.post(a, "/sim/fault", {"metrics": "fail"})
            time.sleep(0.6)
            t0 = time.time()
            eq(pick(k, objective_name="batch"),
               (429, "inference error: ResourceExhausted - system saturated, sheddable request dropped"))
            check(pick(k, objective_name="interactive") in eps, "priority 5 still picked")
            s = k.stream()
            s.send(*envoy.llm_request("m", md=envoy.metadata(subset=["10.9.9.9:8000"])))
            r = s.recv_n(1)[0]
            s.close()
            eq(envoy.immediate(r)[0], 503, "empty subset")
            check(time.time() - t0 < 2, "answers took %.3fs" % (time.time() - t0))


def debug_pool(k):
    """{addr: endpoint} from kepp's /debug/pool."""
    c = http.client.HTTPConnection("127.0.0.1", k.metrics_port, timeout=10)
    try:
        c.request("GET", "/debug/pool")
        r = c.getresponse()
        eq(r.status, 200, "/debug/pool status")
        return {e["addr"]: e for e in json.loads(r.read())["endpoints"]}
    finally:
        c.close()


def in_flight_metric(k, ep):
    """kepp_endpoint_in_flight_requests{endpoint=ep} from /metrics."""
    c = http.client.HTTPConnection("127.0.0.1", k.metrics_port, timeout=10)
    try:
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
    finally:
        c.close()
    prefix = 'kepp_endpoint_in_flight_requests{endpoint="%s"} ' % ep
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):])
    return None


def streaming_on(k, ep, prompt, max_tokens=4000):
    """Plays Envoy for one streamed completion picked onto |ep| (the
    gateway's subset hint names only it): kepp picks, the request goes to
    the pod, and the pod's response headers and first SSE chunks pass
    through kepp. Returns (ext_proc stream, open pod response)."""
    body = json.dumps(completion(prompt=prompt, max_tokens=max_tokens, stream=True))
    s = k.stream()
    s.send(envoy.req_headers([(":method", "POST"), (":path", "/v1/completions"),
                              ("content-type", "application/json")],
                             md=envoy.metadata(subset=[ep])),
           envoy.req_body(body))
    hdr, forwarded, _ = route(s)
    eq(set_headers(hdr)[envoy.DEST], ep, "picked onto the pod the subset names")
    addr, port = ep.rsplit(":", 1)
    c = http.client.HTTPConnection(addr, int(port), timeout=10)
    c.request("POST", "/v1/completions", body=forwarded,
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    eq(r.status, 200, "the pod answers")
    s.send(resp_headers([(":status", "200"), ("content-type", r.getheader("content-type"))]))
    eq(kind(s.recv_n(1)[0]), "response_headers", "response headers answered")
    for _ in range(3):
        chunk = r.read1(65536)
        check(chunk.startswith(b"data: "), "an SSE chunk from the pod: %r" % chunk[:80])
        s.send(resp_body(chunk, eos=False))
        eq(streamed(s.recv_n(1)[0]), (chunk, False), "SSE chunk passed through")
    return s, c, r


def upstream_died(r):
    """Reads the pod's answer to its end: True when it broke off (a reset,
    or an EOF before the last chunk) rather than finishing."""
    try:
        while True:
            chunk = r.read1(65536)
            if not chunk:
                return True
            if b"data: [DONE]" in chunk:
                return False
    except (OSError, http.client.HTTPException):
        return True


def test_pod_dies_mid_request():
    """Two streamed answers are under way from pod A when its process is
    SIGKILLed. Envoy sees its upstream die and ends the ext_proc streams as
    its filter does: one with RST_STREAM (the stream reset), one with a
    half-close before the response's end of stream. kepp releases A's
    in-flight count, decisions during the staleness window answer at once
    (none waits on a scrape of the dead pod), picks leave A once its metrics
    pass --metrics-staleness-threshold, and kepp serves on."""
    with Sim(instances=1, base="127.0.1.1") as pod_a, \
            Sim(instances=2, base="127.0.1.2") as others:
        a = "%s:%d" % (pod_a.addrs[0], pod_a.port)
        rest = ["%s:%d" % (x, others.port) for x in others.addrs]
        eps = [a] + rest
        with envoy.Kepp(endpoints=eps, extra=STALE + ["--enable-debug-endpoints"]) as k:
            wait_until(lambda: all(e["metrics"]["valid"] for e in debug_pool(k).values()),
                       "first scrapes")
            reset, _, r1 = streaming_on(k, a, "first")
            halfclosed, _, r2 = streaming_on(k, a, "second")
            eq(debug_pool(k)[a]["in_flight"], 2, "A's in-flight while it streams")
            eq(in_flight_metric(k, a), 2, "kepp_endpoint_in_flight_requests of A")

            pod_a.kill()
            killed = time.time()
            check(upstream_died(r1) and upstream_died(r2), "the pod's answers broke off")
            # Envoy's ext_proc filter on a dead upstream: the stream is reset
            # (or closed) before the response's end of stream.
            reset.cancel()
            halfclosed.close()
            code, _, _ = halfclosed.finish()
            eq(code, grpc.StatusCode.OK, "a half-closed stream ends OK")
            reset.finish()
            wait_until(lambda: debug_pool(k)[a]["in_flight"] == 0, "A's in-flight released")
            eq(in_flight_metric(k, a), 0, "kepp_endpoint_in_flight_requests of A released")

            # Inside the staleness window: every decision answers at once.
            ch = k.channel()
            pick(k, channel=ch)  # the connection is up before the clock runs
            while time.time() - killed < THRESHOLD:
                t0 = time.time()
                got = pick(k, prompt="during %f" % t0, channel=ch)
                check(got in eps, "a pick: %r" % (got,))
                check(time.time() - t0 < 0.5, "a decision waited %.3fs" % (time.time() - t0))
            # Past it: A's metrics are stale, it is left out.
            time.sleep(max(0.0, killed + THRESHOLD + 0.2 - time.time()))
            picks = picks_of(k)
            check(a not in picks, "picks still go to the dead pod: %s" % picks)
            check(set(picks) <= set(rest), "picks %s" % picks)
            st = debug_pool(k)[a]
            check(st["scrapes"]["failing"] and st["metrics"]["age_ms"] > THRESHOLD * 1000,
                  "A's scrapes fail and its metrics are stale: %s" % st)

            # Serves on: a whole request to a live pod, start to end.
            s, c, r = streaming_on(k, rest[0], "after", max_tokens=8)
            while True:
                chunk = r.read1(65536)
                s.send(resp_body(chunk, eos=not chunk))
                eq(streamed(s.recv_n(1)[0]), (chunk, not chunk), "response chunk")
                if not chunk:
                    break
            s.close()
            eq(s.finish()[0], grpc.StatusCode.OK, "stream after the fault")
            c.close()
            check(k.alive(), "kepp still runs")
            eq(envoy.health_check(k.health_port, "inference-extension"), envoy.SERVING, "health")
