"""Observability: /metrics on --metrics-port with the reference EPP's families
(spec §7.1; checked with promtool and against the values the hermetic tests
expect after known traffic), /healthz, the debug endpoints (off by default;
/debug/explain decides without recording anything and agrees with the real
pick), the per-decision log line at --v=4, and keppctl."""
import http.client
import json
import os
import re
import subprocess
import time

import envoy
from envoy import (TestFailure, check, eq, immediate, kind, llm_request, req_body, req_headers,
                   resp_body, resp_headers, set_headers)
from test_extproc import HERMETIC, route
from test_picks import load, wait_queue
from test_sim import Sim

KEPPCTL = os.path.join(envoy.BUILD_DIR, "keppctl")
POOL = "vllm-qwen3-32b-pool"

# Scores differ per endpoint and ties are impossible with distinct queues:
# the pick of a max-score-picker is deterministic.
DETERMINISTIC = """\
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- type: kv-cache-utilization-scorer
- type: prefix-cache-scorer
- type: max-score-picker
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue-scorer
    weight: 2
  - pluginRef: kv-cache-utilization-scorer
    weight: 1
  - pluginRef: prefix-cache-scorer
    weight: 1
  - pluginRef: max-score-picker
"""


def admin_kepp(endpoints, debug=False, **kw):
    extra = ["--enable-debug-endpoints"] if debug else []
    k = envoy.Kepp(endpoints=endpoints, extra=extra + list(kw.pop("extra", ())), **kw)
    k.admin = "127.0.0.1:%d" % k.metrics_port
    return k


def get(k, path, method="GET", body=None, headers=None):
    host, port = k.admin.split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.getheader("Content-Type"), r.read().decode()
    finally:
        c.close()


def metrics(k):
    st, ctype, text = get(k, "/metrics")
    eq(st, 200, "/metrics status")
    eq(ctype, "text/plain; version=0.0.4; charset=utf-8", "/metrics content type")
    return text


def promtool(text):
    p = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    out = p.stdout.decode()
    if p.returncode != 0 or out.strip():
        raise TestFailure("promtool check metrics: exit %d\n%s" % (p.returncode, out))


def sample(text, line_prefix):
    """The value of the sample line starting with |line_prefix| (name and
    labels exactly), or None."""
    for line in text.splitlines():
        if line.startswith(line_prefix + " "):
            return float(line[len(line_prefix) + 1:])
    return None


def wait_sample(k, line_prefix, want, timeout=5):
    deadline = time.time() + timeout
    while True:
        text = metrics(k)
        got = sample(text, line_prefix)
        if got == want:
            return text
        if time.time() > deadline:
            raise TestFailure("%s = %r, want %r\n%s" % (line_prefix, got, want, text))
        time.sleep(0.05)


def routed(k, msgs):
    s = k.stream()
    s.send(*msgs)
    hdr, _, _ = route(s)
    return s, set_headers(hdr)[envoy.DEST]


def respond(s, body, status="200"):
    s.send(resp_headers([(":status", status), ("content-type", "application/json")]))
    eq(kind(s.recv_n(1)[0]), "response_headers", "response headers answer")
    s.send(resp_body(body, eos=True))
    eq(kind(s.recv_n(1)[0]), "response_body", "response body answer")
    s.close()
    s.finish()


USAGE_BODY = json.dumps({"id": "cmpl-1", "object": "text_completion", "model": "my-model-12345",
                         "choices": [{"index": 0, "text": "hi"}],
                         "usage": {"prompt_tokens": 7, "completion_tokens": 10,
                                   "total_tokens": 17}})


def test_metrics_after_known_traffic_pass_promtool():
    with Sim(instances=3) as sim:
        eps = ["%s:%d" % (a, sim.port) for a in sim.addrs]
        with admin_kepp(eps, manifests=HERMETIC, pool_name=POOL) as k:
            wait_sample(k, 'inference_pool_ready_pods{name="%s"}' % POOL, 3)
            # Hermetic case 1, then its response with usage.
            s, dest = routed(k, llm_request("my-model", prompt="test1", target="my-model-12345",
                                            objective="my-model"))
            respond(s, USAGE_BODY)
            # An InferenceModelRewrite decision, and a refused request.
            s2, _ = routed(k, llm_request("model-to-be-rewritten",
                                          objective="model-to-be-rewritten"))
            s2.close()
            s2.finish()
            s3 = k.stream()
            s3.send(req_headers([("content-type", "application/json")]),
                    req_body('{"prompt":"hello world"}'))
            eq(immediate(s3.recv_n(1)[0])[0], 400, "missing model")
            s3.close()
            s3.finish()

            text = wait_sample(k, 'inference_objective_running_requests{model_name="my-model"}', 0)
            promtool(text)
            want = [
                ("# HELP inference_objective_request_total [ALPHA] Counter of inference "
                 "objective requests broken out for each model and target model.", None),
                ("# TYPE inference_objective_request_total counter", None),
                ('inference_objective_request_total{model_name="my-model",priority="2",'
                 'target_model_name="my-model-12345"}', 1),
                ("# HELP inference_pool_ready_pods [ALPHA] The number of ready pods in the "
                 "inference server pool.", None),
                ('inference_pool_ready_pods{name="%s"}' % POOL, 3),
                ('inference_objective_input_tokens_sum{model_name="my-model",'
                 'target_model_name="my-model-12345"}', 7),
                ('inference_objective_input_tokens_count{model_name="my-model",'
                 'target_model_name="my-model-12345"}', 1),
                ('inference_objective_output_tokens_sum{model_name="my-model",'
                 'target_model_name="my-model-12345"}', 10),
                ('inference_objective_request_duration_seconds_count{model_name="my-model",'
                 'target_model_name="my-model-12345"}', 1),
                ('inference_objective_response_sizes_sum{model_name="my-model",'
                 'target_model_name="my-model-12345"}', len(USAGE_BODY)),
                ('inference_extension_model_rewrite_decisions_total{model_name='
                 '"model-to-be-rewritten",model_rewrite_name="rewrite-test",'
                 'target_model="rewritten-model"}', 1),
                ('inference_objective_request_total{model_name="model-to-be-rewritten",'
                 'priority="0",target_model_name="rewritten-model"}', 1),
                ('inference_objective_request_error_total{error_code="BadRequest",'
                 'model_name="",target_model_name=""}', 1),
                ('inference_extension_scheduler_attempts_total{namespace="default",'
                 'pod_name="%s",port="%d",status="success",target_model_name="my-model-12345"}'
                 % (dest, sim.port), 1),
                ('inference_extension_scheduler_e2e_duration_seconds_count', 2),
                ('inference_extension_plugin_duration_seconds_count{extension_point="Scorer",'
                 'plugin_name="queue-scorer",plugin_type="queue-scorer"}', 2),
                ('inference_extension_prefix_indexer_hit_bytes_count', 2),
                ('kepp_endpoint_picks_total{endpoint="%s"}' % dest, None),
                ('kepp_worker_streams_total{worker="0"}', None),
            ]
            lines = set(text.splitlines())
            for line, value in want:
                if value is None:
                    check(line in lines or sample(text, line) is not None,
                          "missing %r in\n%s" % (line, text))
                else:
                    eq(sample(text, line), value, line)
            # Pool gauges name every endpoint; kepp's own per-endpoint gauges too.
            for ep in eps:
                check('inference_pool_per_pod_queue_size{model_server_pod="%s",name="%s"} 0'
                      % (ep, POOL) in lines, "per-pod queue of %s" % ep)
                check(sample(text, 'kepp_endpoint_metrics_age_seconds{endpoint="%s"}' % ep)
                      < 2, "metrics of %s are fresh" % ep)
            eq(sum(sample(text, 'kepp_endpoint_picks_total{endpoint="%s"}' % ep)
                   for ep in eps), 2, "picks")
            # Latency-predictor and flow-control families are not produced.
            check("flow_control" not in text and "ttft" not in text, "no absent features")


def test_healthz_and_debug_endpoints_off_by_default():
    with admin_kepp(envoy.DEFAULT_ENDPOINTS) as k:
        eq(get(k, "/healthz")[::2], (200, "ok\n"))
        eq(get(k, "/debug/pool")[0], 404)
        eq(get(k, "/debug/explain?model=m&prompt=hi")[0], 404)
        eq(get(k, "/metrics", method="POST", body="x")[0], 405)
        eq(get(k, "/nope")[0], 404)
        promtool(metrics(k))


def explain(k, body, headers=None, query=""):
    st, ctype, text = get(k, "/debug/explain" + query, method="POST", body=body,
                          headers=headers or {})
    eq(st, 200, "explain status: " + text)
    eq(ctype, "application/json", "explain content type")
    return json.loads(text)


def test_explain_matches_the_pick_and_records_nothing():
    with Sim(instances=3, extra=["--max-num-seqs", "1", "--decode-ms", "20"]) as sim:
        eps = ["%s:%d" % (a, sim.port) for a in sim.addrs]
        with admin_kepp(eps, debug=True, config_text=DETERMINISTIC) as k:
            # Distinct queues: 4 waiting on the first pod, 1 on the second.
            threads = load(sim, sim.addrs[0], 5, 150) + load(sim, sim.addrs[1], 2, 150)
            wait_queue(sim, sim.addrs[0], 4)
            wait_queue(sim, sim.addrs[1], 1)
            time.sleep(0.3)
            body = envoy.completion_body("m", prompt="a shared prompt " * 20)
            before = metrics(k)
            check("\ninference_objective_request_total{" not in before, "no request yet")
            eq(sample(before, "inference_extension_prefix_indexer_size"), 0, "empty index")

            ex = explain(k, body, {"x-request-id": "ex-1"})
            eq(ex["request_id"], "ex-1")
            eq(ex["model"], "m")
            eq(ex["pick"], eps[2], "explain picks the idle pod: %s" % ex)
            eq([s["name"] for s in ex["scorers"]],
               ["queue-scorer", "kv-cache-utilization-scorer", "prefix-cache-scorer"])
            eq([s["weight"] for s in ex["scorers"]], [2, 1, 1])
            by = {e["endpoint"]: e for e in ex["endpoints"]}
            eq(sorted(by), sorted(eps))
            eq(by[eps[0]]["scores"]["queue-scorer"], 0)
            eq(by[eps[2]]["scores"]["queue-scorer"], 1)
            eq(by[eps[2]]["rank"], 0)
            for e in ex["endpoints"]:
                s = e["scores"]
                total = 2 * s["queue-scorer"] + s["kv-cache-utilization-scorer"] + \
                    s["prefix-cache-scorer"]
                check(abs(total - e["total"]) < 1e-9, "weighted total of %s" % e)

            # Nothing was recorded.
            after = metrics(k)
            check("\ninference_objective_request_total{" not in after, "explain is not counted")
            eq(sample(after, "inference_extension_prefix_indexer_size"), 0, "index untouched")
            for ep in eps:
                eq(sample(after, 'kepp_endpoint_picks_total{endpoint="%s"}' % ep), 0)

            # The same request for real goes where explain said, and counts.
            s = k.stream()
            s.send(req_headers([(":path", "/v1/completions"), ("x-request-id", "ex-1")]),
                   req_body(body))
            hdr, _, _ = route(s)
            eq(set_headers(hdr)[envoy.DEST], ex["pick"], "the real pick")
            s.close()
            s.finish()
            after = metrics(k)
            check(sample(after, "inference_extension_prefix_indexer_size") > 0, "index learnt")
            eq(sample(after, 'kepp_endpoint_picks_total{endpoint="%s"}' % eps[2]), 1)

            # GET form, subset hint and errors are explained too.
            st, _, text = get(k, "/debug/explain?model=m&prompt=hi&subset=" + eps[1])
            eq(st, 200)
            g = json.loads(text)
            eq(g["pick"], eps[1], "subset hint")
            eq(len(g["endpoints"]), 1)
            bad = explain(k, '{"prompt":"no model"}')
            eq(bad["error"]["status"], 400)
            eq(bad["pick"], None)

            # /debug/pool: every endpoint with its metrics.
            st, _, text = get(k, "/debug/pool")
            eq(st, 200)
            pool = json.loads(text)
            eq(sorted(e["addr"] for e in pool["endpoints"]), sorted(eps))
            p0 = [e for e in pool["endpoints"] if e["addr"] == eps[0]][0]
            check(p0["metrics"]["valid"] and p0["metrics"]["waiting_queue"] >= 3,
                  "queue of the busy pod: %s" % p0)
            check(pool["prefix_index_size"] > 0, "prefix index size")
    # The simulator's exit cut the load requests short.
    for t in threads:
        t.join(30)


def decision_lines(k, msg):
    return [l for l in k.logs() if l.get("msg") == msg]


def test_decision_log_at_v4_and_quiet_by_default():
    with Sim(instances=2) as sim:
        eps = ["%s:%d" % (a, sim.port) for a in sim.addrs]
        with admin_kepp(eps, v=4) as k:
            s, dest = routed(k, llm_request("m", request_id="obs-req-1", target="m-2"))
            s.close()
            s.finish()
            s3 = k.stream()
            s3.send(req_headers([("x-request-id", "obs-req-bad")]), req_body('{"prompt":"x"}'))
            s3.recv_n(1)
            s3.close()
            s3.finish()
            time.sleep(0.2)
            lines = [l for l in decision_lines(k, "request scheduled")
                     if l.get("x-request-id") == "obs-req-1"]
            eq(len(lines), 1, "one decision line")
            d = lines[0]
            eq(d["level"], "debug")
            eq((d["model"], d["target_model"], d["pick"]), ("m", "m-2", dest))
            eq(sorted(c["endpoint"] for c in d["candidates"]), sorted(eps))
            for c in d["candidates"]:
                eq(sorted(c["scores"]), ["kv-cache-utilization-scorer", "prefix-cache-scorer",
                                         "queue-scorer"])
            eq([c["endpoint"] for c in d["candidates"] if c.get("rank") == 0], [dest])
            bad = [l for l in decision_lines(k, "request rejected")
                   if l.get("x-request-id") == "obs-req-bad"]
            eq(len(bad), 1, "one rejection line")
            eq(bad[0]["status"], 400)
        with admin_kepp(eps) as k:
            s, _ = routed(k, llm_request("m", request_id="obs-req-2"))
            s.close()
            s.finish()
            time.sleep(0.2)
            noisy = [l for l in k.logs() if "obs-req-2" in json.dumps(l)]
            eq(noisy, [], "nothing per request at the default level")


def test_keppctl_explain_and_top():
    with Sim(instances=2) as sim:
        eps = ["%s:%d" % (a, sim.port) for a in sim.addrs]
        with admin_kepp(eps, debug=True, config_text=DETERMINISTIC) as k:
            time.sleep(0.3)
            body = envoy.completion_body("m", prompt="hello")
            p = subprocess.run([KEPPCTL, "explain", "--admin", k.admin, "-H",
                                "x-request-id: ctl-1"], input=body.encode(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
            out = p.stdout.decode()
            eq(p.returncode, 0, "keppctl explain: " + p.stderr.decode())
            check(out.startswith('request ctl-1: model "m" -> "m" (priority 0), profile default'),
                  out)
            check(re.search(r"ENDPOINT +queue-scorer\(x2\) +kv-cache-utilization-scorer\(x1\) "
                            r"+prefix-cache-scorer\(x1\) +TOTAL", out), out)
            star = [l for l in out.splitlines() if l.startswith("* ")]
            eq(len(star), 1, out)
            pick = re.search(r"^pick: (\S+)$", out, re.M).group(1)
            check(star[0].split()[1] == pick and pick in eps, out)
            # An error is printed with its status, exit 3.
            p = subprocess.run([KEPPCTL, "explain", "--admin", k.admin], input=b'{"prompt":"x"}',
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
            eq(p.returncode, 3)
            check("error 400: inference error: BadRequest - model not found in request body"
                  in p.stdout.decode(), p.stdout.decode())

            s, dest = routed(k, llm_request("m"))
            p = subprocess.run([KEPPCTL, "top", "--admin", k.admin, "--once", "--interval",
                                "0.2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=20)
            out = p.stdout.decode()
            eq(p.returncode, 0, "keppctl top: " + p.stderr.decode())
            check("ENDPOINT" in out and "IN-FLIGHT" in out and "PICKS/S" in out, out)
            rows = {l.split()[0]: l.split() for l in out.splitlines() if l.split() and
                    l.split()[0] in eps}
            eq(sorted(rows), sorted(eps), out)
            eq(rows[dest][4], "1", "in-flight of the open stream: " + out)
            s.close()
            s.finish()
            p = subprocess.run([KEPPCTL, "top", "--admin", "127.0.0.1:1", "--once"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
            eq(p.returncode, 1, "unreachable admin port")
