"""Picks follow live metrics: kepp scrapes the simulator's /metrics and its
scorers and saturation detector act on them (spec §4.2, §5.1, §5.2)."""
import json
import threading
import time

import envoy
from envoy import TestFailure, check, eq, immediate, kind, llm_request, set_headers
from test_extproc import POOL_V1, objective, route
from test_sim import Sim, completion


def load(sim, addr, n, max_tokens):
    """Starts |n| long requests straight on one instance (not through kepp)."""
    def one():
        try:
            sim.post(addr, "/v1/completions", completion(max_tokens=max_tokens))
        except OSError:
            pass  # only the load matters here

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    return threads


def wait_queue(sim, addr, at_least, timeout=5):
    from test_sim import value
    deadline = time.time() + timeout
    while time.time() < deadline:
        if value(sim.metrics(addr), "vllm:num_requests_waiting") >= at_least:
            return
        time.sleep(0.02)
    raise TestFailure("the queue of %s never reached %d" % (addr, at_least))


def pick(k, model="m", objective_name=None, prompt="hello", channel=None):
    s = k.stream(channel)
    s.send(*llm_request(model, prompt=prompt, objective=objective_name))
    r = s.recv_n(1, 10)[0]
    if kind(r) == "immediate_response":
        s.close()
        return immediate(r)
    hdr = r
    s.recv_n(1, 10)
    s.close()
    return set_headers(hdr)[envoy.DEST]


def test_picks_avoid_the_busy_pod():
    with Sim(instances=3, extra=["--max-num-seqs", "1", "--decode-ms", "20"]) as sim:
        eps = ["%s:%d" % (a, sim.port) for a in sim.addrs]
        busy = eps[0]
        with envoy.Kepp(endpoints=eps) as k:
            threads = load(sim, sim.addrs[0], 6, 30)
            wait_queue(sim, sim.addrs[0], 4)
            time.sleep(0.3)  # a few scrape rounds
            picks = [pick(k, prompt="question %d" % i) for i in range(20)]
            check(busy not in picks, "a pick went to the pod with a queue: %s" % picks)
            check(set(picks) <= set(eps[1:]), "picks %s" % picks)
            for t in threads:
                t.join(20)


def test_sheddable_requests_shed_exactly_when_saturated():
    manifests = POOL_V1 + objective("batch", -1) + objective("interactive", 5)
    with Sim(instances=1, extra=["--max-num-seqs", "1", "--decode-ms", "20"]) as sim:
        ep = "%s:%d" % (sim.addrs[0], sim.port)
        with envoy.Kepp(endpoints=[ep], manifests=manifests) as k:
            time.sleep(0.3)
            # Fresh metrics, idle pod: not saturated, the sheddable request passes.
            eq(pick(k, objective_name="batch"), ep, "idle pool admits priority -1")
            threads = load(sim, sim.addrs[0], 10, 30)
            wait_queue(sim, sim.addrs[0], 6)  # >= queueDepthThreshold 5: saturated
            time.sleep(0.3)
            eq(pick(k, objective_name="batch"),
               (429, "inference error: ResourceExhausted - system saturated, sheddable request dropped"),
               "saturated pool sheds priority -1")
            eq(pick(k, objective_name="interactive"), ep, "priority 5 is never shed")
            for t in threads:
                t.join(30)


QUEUE_ONLY = """\
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- type: max-score-picker
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue-scorer
  - pluginRef: max-score-picker
"""


def test_burst_inside_one_scrape_spreads():
    """Twelve requests decided between two scrapes: the reference would send
    them all to the pod whose last scrape showed the shortest queue; kepp
    counts what it sent since that scrape, so the burst spreads once the
    idle pod's count passes the others' queues."""
    with Sim(instances=3, extra=["--max-num-seqs", "1", "--decode-ms", "40"]) as sim:
        eps = ["%s:%d" % (a, sim.port) for a in sim.addrs]
        threads = load(sim, sim.addrs[1], 3, 60) + load(sim, sim.addrs[2], 3, 60)
        wait_queue(sim, sim.addrs[1], 2)
        wait_queue(sim, sim.addrs[2], 2)
        with envoy.Kepp(endpoints=eps, config_text=QUEUE_ONLY,
                        extra=["--refresh-metrics-interval", "30s"]) as k:
            time.sleep(0.5)  # the first scrape: queues 0, 2, 2; the next is 30 s away
            streams, picks = [], []
            for i in range(12):
                s = k.stream()
                s.send(*llm_request("m", prompt="burst %d" % i))
                r = s.recv_n(1, 10)[0]
                picks.append(set_headers(r)[envoy.DEST])
                streams.append(s)  # held open: still in flight
            for s in streams:
                s.close()
        counts = {e: picks.count(e) for e in eps}
        print("# burst picks: %s" % sorted(counts.values(), reverse=True))
        check(counts[eps[0]] < 12, "the whole burst herded onto the idle pod: %s" % counts)
        check(counts[eps[1]] > 0 and counts[eps[2]] > 0, "burst did not spread: %s" % counts)
        check(counts[eps[0]] >= 2, "the idle pod took its share first: %s" % counts)
        for t in threads:
            t.join(30)
