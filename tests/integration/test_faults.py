"""Model-server faults: a pod whose /metrics fails, hangs or answers garbage
(a dead pod, from kepp's side) stops getting picks once its metrics pass
--metrics-staleness-threshold; with every pod stale kepp fails open; no
request waits on a scrape; a saturated pool sheds and an empty subset is a
503, never a hang."""
import time

import envoy
from envoy import check, eq
from test_extproc import POOL_V1, objective
from test_picks import pick
from test_sim import Sim

STALE = ["--metrics-staleness-threshold", "400ms"]


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
