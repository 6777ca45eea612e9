"""ext_proc behaviour of kepp (spec §2), driven the way Envoy drives it.

Endpoints are loopback addresses nothing listens on: kepp has no metrics for
them, so every endpoint scores the same and the utilization detector sees the
pool as saturated (spec §5.2: missing metrics count as 1.0).
"""
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

import grpc

import envoy
from envoy import (DEST, TestFailure, check, eq, immediate, kind, lb_metadata, llm_request,
                   metadata, req_body, req_headers, resp_body, resp_headers, resp_trailers,
                   set_header_list, set_headers, streamed)

EPS = envoy.DEFAULT_ENDPOINTS
EP1 = "127.0.0.1:8000"

POOL_V1 = """\
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata:
  name: vllm-qwen3-32b-pool
  namespace: default
spec:
  targetPorts:
  - number: 8000
  selector:
    matchLabels:
      app: vllm-qwen3-32b-pool
  endpointPickerRef:
    name: vllm-qwen3-32b-pool-epp
    port:
      number: 9002
"""

POOL_V1ALPHA2 = """\
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferencePool
metadata:
  name: vllm-qwen3-32b-pool
  namespace: default
spec:
  targetPortNumber: 8000
  selector:
    app: vllm-qwen3-32b-pool
  extensionRef:
    name: vllm-qwen3-32b-pool-epp
"""


def objective(name, priority=None, pool="vllm-qwen3-32b-pool"):
    prio = "" if priority is None else "  priority: %d\n" % priority
    return """\
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceObjective
metadata:
  name: %s
  namespace: default
spec:
%s  poolRef:
    name: %s
""" % (name, prio, pool)


# The hermetic test resources (spec §8.2), as a user would kubectl apply them.
HERMETIC = POOL_V1 + "".join([
    objective("sql-lora", 2),
    objective("sql-lora-sheddable"),
    objective("my-model", 2),
    objective("direct-model", 2),
    objective("inference-objective-with-priority-4", 4),
    objective("sheddable-objective", -1),
    objective("other-pool-objective", -1, pool="another-pool"),
]) + """\
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceModelRewrite
metadata:
  name: rewrite-test
  namespace: default
spec:
  poolRef:
    group: inference.networking.k8s.io
    name: vllm-qwen3-32b-pool
  rules:
  - matches:
    - model:
        type: Exact
        value: model-to-be-rewritten
    targets:
    - modelRewrite: rewritten-model
      weight: 100
"""

MSG_NO_MODEL = "inference error: BadRequest - model not found in request body"
MSG_NO_CANDIDATES = ("inference error: ServiceUnavailable - failed to find endpoint candidates "
                     "for serving the request")
MSG_NO_PODS = "inference error: Internal - no pods available in datastore"
MSG_SHED = "inference error: ResourceExhausted - system saturated, sheddable request dropped"


# ---- helpers ----------------------------------------------------------------

def route(stream, timeout=10):
    """Reads one routed request answer: the request_headers response, then
    request_body responses up to end_of_stream. Returns (headers response,
    forwarded body, list of body responses)."""
    hdr = stream.recv_n(1, timeout)[0]
    if kind(hdr) == "immediate_response":
        raise TestFailure("request was refused: %s %r" % immediate(hdr))
    eq(kind(hdr), "request_headers", "first response")
    chunks, body = [], b""
    while True:
        r = stream.recv_n(1, timeout)[0]
        eq(kind(r), "request_body", "body response")
        chunks.append(r)
        b, eos = streamed(r)
        body += b
        if eos:
            return hdr, body, chunks


def send_request(k, msgs, channel=None):
    s = k.stream(channel)
    s.send(*msgs)
    hdr, body, chunks = route(s)
    return s, hdr, body, chunks


def check_routing(hdr, allowed):
    """The destination header and envoy.lb metadata agree and name one of
    |allowed|; returns it."""
    dest = set_headers(hdr).get(DEST)
    check(dest is not None, "no %s in %s" % (DEST, set_header_list(hdr)))
    eq(lb_metadata(hdr), dest, "envoy.lb metadata vs header")
    check(dest in allowed, "destination %s not in %s" % (dest, allowed))
    check(hdr.request_headers.response.clear_route_cache, "clear_route_cache not set")
    return dest


def refused(k, msgs, channel=None):
    """Sends |msgs| and expects one ImmediateResponse, then the end of the
    stream with OK. Returns (code, body)."""
    s = k.stream(channel)
    s.send(*msgs)
    r = s.recv_n(1)[0]
    out = immediate(r)
    code, details, extra = s.finish()
    eq(extra, [], "messages after the ImmediateResponse")
    eq(code, grpc.StatusCode.OK, "gRPC status after an ImmediateResponse (%s)" % details)
    return out


def body_request(body, path="/v1/completions", headers=(), md=None):
    h = [(":path", path), ("content-type", "application/json")] + list(headers)
    return [req_headers(h, md=md), req_body(body, md=md)]


def dests_of(k, n, make):
    out = []
    for _ in range(n):
        s, hdr, body, _ = send_request(k, make())
        out.append(check_routing(hdr, EPS + ["127.0.0.3:8002"]))
        s.close()
    return out


# ---- §2.10 worked traces ----------------------------------------------------

def test_trace_a_split_body_with_header_rewrite(kepp1):
    s = kepp1.stream()
    s.send(req_headers([("hi", "mom"), ("x-gateway-inference-objective", "sql-lora-sheddable"),
                        ("x-gateway-model-name-rewrite", "sql-lora-1fdg3"),
                        ("x-request-id", "test-request-id")]),
           req_body('{"max_tokens":100,"model":"sql-lo', eos=False))
    s.expect_quiet()  # nothing before the body is complete (FULL_DUPLEX_STREAMED)
    s.send(req_body('ra-sheddable","prompt":"test6","temperature":0}', eos=True))
    hdr, b = s.recv_n(2)
    eq(kind(hdr), "request_headers")
    eq(set_headers(hdr), {DEST: EP1, "Content-Length": "76", "hi": "mom",
                          "x-request-id": "test-request-id"}, "set_headers")
    eq(len(set_header_list(hdr)), 4, "number of set_headers")
    check(hdr.request_headers.response.clear_route_cache, "clear_route_cache")
    eq(lb_metadata(hdr), EP1, "envoy.lb metadata")
    eq(list(hdr.dynamic_metadata.fields.keys()), ["envoy.lb"], "metadata namespaces")
    eq(kind(b), "request_body")
    eq(streamed(b), (b'{"max_tokens":100,"model":"sql-lora-1fdg3","prompt":"test6",'
                     b'"temperature":0}', True), "forwarded body")
    s.expect_quiet()
    s.close()
    code, details, extra = s.finish()
    eq((code, extra), (grpc.StatusCode.OK, []), "end of stream (%s)" % details)


def test_trace_b_model_missing(kepp):
    eq(refused(kepp, [req_headers([("content-type", "application/json")]),
                      req_body('{"prompt":"hello world"}')]), (400, MSG_NO_MODEL))


def test_trace_c_sse_response(kepp1):
    s, hdr, body, _ = send_request(kepp1, llm_request("m"))
    s.send(resp_headers([("content-type", "text/event-stream"), ("status", "200")]))
    r = s.recv_n(1)[0]
    eq(kind(r), "response_headers")
    eq(set_headers(r), {"x-went-into-resp-headers": "true", "content-type": "text/event-stream",
                        "status": "200"}, "response set_headers")
    eq(len(r.dynamic_metadata.fields), 0, "dynamic metadata on response headers")
    chunks = [(b"data: {}", False),
              (b'data: {"usage":{"prompt_tokens":7,"total_tokens":17,"completion_tokens":10}}'
               b"\ndata: [DONE]", False),
              (b"", True)]
    for data, eos in chunks:
        s.send(resp_body(data, eos=eos))
        r = s.recv_n(1)[0]
        eq(kind(r), "response_body")
        eq(streamed(r), (data, eos), "echoed SSE chunk")
    s.close()
    code, details, extra = s.finish()
    eq((code, extra), (grpc.StatusCode.OK, []), "end of stream (%s)" % details)


def test_trace_d_header_only_request(kepp):
    s = kepp.stream()
    s.send(req_headers([(":method", "GET"), (":path", "/v1/models")], eos=True))
    r = s.recv_n(1)[0]
    dest = check_routing(r, EPS)
    h = set_headers(r)
    check(envoy.UUID4.match(h.get("x-request-id", "")),
          "generated x-request-id is not a UUIDv4: %r" % h.get("x-request-id"))
    eq(set(h) - {":method", ":path"}, {DEST, "x-request-id"}, "set_headers keys")
    check("Content-Length" not in h and "content-length" not in h, "Content-Length on GET")
    eq(dest, lb_metadata(r))
    s.expect_quiet()
    s.close()


def test_header_only_request_ids_differ(kepp):
    ids = set()
    for _ in range(5):
        (r,), s = kepp.exchange([req_headers([(":method", "GET")], eos=True)], 1)
        ids.add(set_headers(r)["x-request-id"])
    eq(len(ids), 5, "distinct generated request ids")


def test_header_only_keeps_given_request_id(kepp):
    (r,), s = kepp.exchange([req_headers([("x-request-id", "abc-123")], eos=True)], 1)
    check_routing(r, EPS)
    eq(set_headers(r).get("x-request-id", "abc-123"), "abc-123", "x-request-id")


def test_header_only_is_uniformly_random(kepp):
    seen = {}
    for _ in range(90):
        (r,), s = kepp.exchange([req_headers([(":method", "GET")], eos=True)], 1)
        d = check_routing(r, EPS)
        seen[d] = seen.get(d, 0) + 1
    eq(sorted(seen), sorted(EPS), "endpoints picked")
    check(min(seen.values()) >= 10, "skewed picks: %s" % seen)


def test_header_only_ignores_subset_hint(kepp):
    (r,), s = kepp.exchange([req_headers([(":method", "GET")], eos=True,
                                         md=metadata(subset=[]))], 1)
    check_routing(r, EPS)


def test_request_id_generated_for_body_request(kepp1):
    s, hdr, body, _ = send_request(kepp1, llm_request("m", request_id=None))
    rid = set_headers(hdr).get("x-request-id", "")
    check(envoy.UUID4.match(rid), "x-request-id %r is not a UUIDv4" % rid)


# ---- §2.8 errors (hermetic cases #3, #4, #8, #12) ---------------------------

def test_error_no_pods_header_only():
    with envoy.Kepp(endpoints=None, manifests=POOL_V1) as k:
        eq(refused(k, [req_headers([("content-type", "application/json")], eos=True)]),
           (500, MSG_NO_PODS))


def test_error_missing_model_field(kepp):
    eq(refused(kepp, body_request('{"prompt":"hello world"}')), (400, MSG_NO_MODEL))


def test_error_model_not_a_string(kepp):
    eq(refused(kepp, body_request('{"model":5,"prompt":"x"}')), (400, MSG_NO_MODEL))
    eq(refused(kepp, body_request('{"model":null,"prompt":"x"}')), (400, MSG_NO_MODEL))


def test_error_invalid_json(kepp):
    eq(refused(kepp, [req_headers([("hi", "mom")]), req_body("no healthy upstream")]),
       (400, "inference error: BadRequest - error unmarshaling request bodyMap: "
             "invalid character 'o' in literal null (expecting 'u')"))


def test_error_subset_no_match(kepp):
    md = metadata(subset=["192.168.1.99:8000"])
    eq(refused(kepp, llm_request("m", md=md)), (503, MSG_NO_CANDIDATES))


def test_error_stream_closed_after_immediate_response(kepp):
    s = kepp.stream()
    s.send(*body_request('{"prompt":"x"}'))
    eq(immediate(s.recv_n(1)[0])[0], 400)
    s.send(resp_headers([("content-type", "application/json")]))
    code, details, extra = s.finish()
    eq(extra, [], "responses after the ImmediateResponse")


# ---- §2.7 step 3a validation per API path ------------------------------------

def test_validation_errors_per_api_path(kepp):
    bad = "inference error: BadRequest - "
    cases = [
        ("/v1/chat/completions", '{"model":"m"}',
         "invalid chat completions request: must have valid messages field"),
        ("/v1/chat/completions", '{"model":"m","messages":[]}',
         "invalid chat completions request: must have valid messages field"),
        ("/v1/completions", '{"model":"m"}', "invalid completions request: must have prompt field"),
        ("/v1/completions", '{"model":"m","prompt":5}',
         "invalid completions request: must have prompt field"),
        ("/v1/responses", '{"model":"m"}', "invalid responses request: must have input field"),
        ("/v1/conversations", '{"model":"m"}',
         "invalid conversations request: must have items field"),
        ("/v1/embeddings", '{"model":"m"}', "invalid embeddings request: must have input field"),
        ("/something/else", '{"model":"m"}',
         "invalid completions request: must have prompt field"),
        (None, '{"model":"m"}', "invalid completions request: must have prompt field"),
    ]
    for path, body, msg in cases:
        h = [("content-type", "application/json")]
        if path is not None:
            h.insert(0, (":path", path))
        got = refused(kepp, [req_headers(h), req_body(body)])
        eq(got, (400, bad + msg), "path %s body %s" % (path, body))


def test_validation_path_fallback_headers(kepp):
    for hname in ("x-original-path", "x-forwarded-path"):
        got = refused(kepp, [req_headers([(hname, "/v1/chat/completions")]),
                             req_body('{"model":"m"}')])
        eq(got, (400, "inference error: BadRequest - invalid chat completions request: "
                      "must have valid messages field"), hname)


def test_valid_requests_per_api_path(kepp):
    cases = [
        ("/v1/chat/completions", '{"model":"m","messages":[{"role":"user","content":"hi"}]}'),
        ("/v1/completions", '{"model":"m","prompt":["a","b"]}'),
        ("/v1/completions", '{"model":"m","prompt":"a","stream":true}'),
        ("/v1/responses", '{"model":"m","input":"hi"}'),
        ("/v1/conversations", '{"model":"m","items":[{"type":"message"}]}'),
        ("/v1/embeddings", '{"model":"m","input":"hi"}'),
    ]
    for path, body in cases:
        s, hdr, fwd, _ = send_request(kepp, body_request(body, path=path))
        check_routing(hdr, EPS)
        eq(fwd, body.encode(), "forwarded body for " + path)
        eq(set_headers(hdr).get("Content-Length"), str(len(body)), "Content-Length")
        eq(set_headers(hdr).get(":path"), path, ":path echoed")
        s.close()


def test_error_empty_body(kepp):
    eq(refused(kepp, [req_headers([(":path", "/v1/completions")]), req_body(b"", eos=True)]),
       (400, "inference error: BadRequest - error unmarshaling request bodyMap: "
             "unexpected end of JSON input"))


# ---- §2.4 endpoint subset ---------------------------------------------------

def test_subset_list_value(kepp):
    for ep in EPS:
        md = metadata(subset=[ep])
        s, hdr, _, _ = send_request(kepp, llm_request("m", md=md))
        eq(check_routing(hdr, EPS), ep, "subset " + ep)


def test_subset_hint_only_on_body_message(kepp):
    msgs = llm_request("m")
    msgs[1].metadata_context.CopyFrom(metadata(subset=["127.0.0.2:8000"]))
    s, hdr, _, _ = send_request(kepp, msgs)
    eq(check_routing(hdr, EPS), "127.0.0.2:8000")


def test_subset_comma_string(kepp):
    md = metadata(subset_str="127.0.0.3:8000,10.9.9.9:8000")
    for _ in range(5):
        s, hdr, _, _ = send_request(kepp, llm_request("m", md=md))
        eq(check_routing(hdr, EPS), "127.0.0.3:8000")


def test_subset_empty_list_is_503(kepp):
    eq(refused(kepp, llm_request("m", md=metadata(subset=[]))), (503, MSG_NO_CANDIDATES))


def test_subset_partial_match(kepp):
    md = metadata(subset=["10.9.9.9:8000", "127.0.0.1:8000", "192.168.1.3:8000"])
    for _ in range(10):
        s, hdr, _, _ = send_request(kepp, llm_request("m", md=md))
        eq(check_routing(hdr, EPS), "127.0.0.1:8000")


def test_subset_several_candidates(kepp):
    md = metadata(subset=["127.0.0.1:8000", "127.0.0.2:8000"])
    seen = set(dests_of(kepp, 30, lambda: llm_request("m", md=md)))
    check(seen <= {"127.0.0.1:8000", "127.0.0.2:8000"}, "picked outside the subset: %s" % seen)


def test_subset_non_string_entries_ignored(kepp):
    md = metadata(subset=[5, "127.0.0.2:8000"])
    s, hdr, _, _ = send_request(kepp, llm_request("m", md=md))
    eq(check_routing(hdr, EPS), "127.0.0.2:8000")


def test_subset_filter_disabled():
    with envoy.Kepp(extra=["--disable-endpoint-subset-filter"]) as k:
        s, hdr, _, _ = send_request(k, llm_request("m", md=metadata(subset=[])))
        check_routing(hdr, EPS)
        s, hdr, _, _ = send_request(k, llm_request("m", md=metadata(subset=["10.9.9.9:1"])))
        check_routing(hdr, EPS)


# ---- model rewrites, objectives, InferenceModel --------------------------------

def test_model_rewrite_header(kepp1):
    s, hdr, body, _ = send_request(kepp1, llm_request("orig", target="my-model-12345"))
    want = '{"max_tokens":100,"model":"my-model-12345","prompt":"hello","temperature":0}'
    eq(body, want.encode(), "forwarded body")
    eq(set_headers(hdr)["Content-Length"], str(len(want)), "Content-Length")


def test_model_rewrite_header_from_value_field(kepp1):
    """Headers in `value` (not raw_value), as the Go hermetic tests send them."""
    s = kepp1.stream()
    s.send(req_headers([("hi", "mom"), ("x-gateway-model-name-rewrite", "tgt"),
                        ("x-request-id", "rid")], raw=False),
           req_body('{"model":"orig","prompt":"p"}'))
    hdr, body, _ = route(s)
    eq(body, b'{"model":"tgt","prompt":"p"}')
    eq(set_headers(hdr)["hi"], "mom")
    eq(set_headers(hdr)["x-request-id"], "rid")


def test_inference_model_rewrite_beats_header():
    with envoy.Kepp(manifests=HERMETIC, endpoints=[EP1]) as k:
        # hermetic #14: the rewrite CR overrides the header's target
        s, hdr, body, _ = send_request(k, llm_request(
            "model-to-be-rewritten", "test-rewrite", target="model-to-be-rewritten"))
        eq(json.loads(body)["model"], "rewritten-model", "CR rewrite")
        eq(set_headers(hdr)["Content-Length"], str(len(body)))
        s, hdr, body, _ = send_request(k, llm_request(
            "model-to-be-rewritten", "test-rewrite", target="something-else"))
        eq(json.loads(body)["model"], "rewritten-model", "CR rewrite beats the header")
        s, hdr, body, _ = send_request(k, llm_request("other-model", target="hdr-target"))
        eq(json.loads(body)["model"], "hdr-target", "header rewrite without a matching rule")
        s, hdr, body, _ = send_request(k, llm_request("other-model"))
        eq(json.loads(body)["model"], "other-model", "no rewrite")


REWRITES = POOL_V1 + """\
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceModelRewrite
metadata:
  name: catch-all
  namespace: default
spec:
  poolRef:
    group: inference.networking.k8s.io
    name: vllm-qwen3-32b-pool
  rules:
  - targets:
    - modelRewrite: catch-all-model
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceModelRewrite
metadata:
  name: weighted
  namespace: default
spec:
  poolRef:
    group: inference.networking.k8s.io
    name: vllm-qwen3-32b-pool
  rules:
  - matches:
    - model:
        type: Exact
        value: split-model
    - model:
        value: split-alias
    targets:
    - modelRewrite: split-a
      weight: 25
    - modelRewrite: split-b
      weight: 75
"""


def test_inference_model_rewrite_precedence_and_weights():
    with envoy.Kepp(manifests=REWRITES, endpoints=[EP1]) as k:
        s, hdr, body, _ = send_request(k, llm_request("anything"))
        eq(json.loads(body)["model"], "catch-all-model", "generic rule")
        counts = {"split-a": 0, "split-b": 0}
        for i in range(200):
            s, hdr, body, _ = send_request(k, llm_request("split-alias" if i % 2 else
                                                          "split-model"))
            m = json.loads(body)["model"]
            check(m in counts, "exact rule should win over the generic one, got %r" % m)
            counts[m] += 1
            s.close()
        share = counts["split-b"] / 200.0
        check(0.6 <= share <= 0.9, "weight 75 of 100 drew %.2f of requests" % share)


INFERENCE_MODELS = POOL_V1ALPHA2 + """\
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceModel
metadata:
  name: base-model
  namespace: default
spec:
  modelName: base-model
  criticality: Critical
  poolRef:
    name: vllm-qwen3-32b-pool
  targetModels:
  - name: base-model-v1
    weight: 25
  - name: base-model-v2
    weight: 75
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceModel
metadata:
  name: single
  namespace: default
spec:
  modelName: single-model
  criticality: Critical
  poolRef:
    name: vllm-qwen3-32b-pool
  targetModels:
  - name: single-model-lora
"""


def test_inference_model_target_weights():
    with envoy.Kepp(manifests=INFERENCE_MODELS, endpoints=[EP1],
                    extra=["--pool-group", "inference.networking.x-k8s.io"]) as k:
        s, hdr, body, _ = send_request(k, llm_request("single-model"))
        eq(json.loads(body)["model"], "single-model-lora", "single target")
        counts = {"base-model-v1": 0, "base-model-v2": 0}
        for _ in range(200):
            s, hdr, body, _ = send_request(k, llm_request("base-model"))
            m = json.loads(body)["model"]
            check(m in counts, "unexpected target %r" % m)
            counts[m] += 1
            eq(set_headers(hdr)["Content-Length"], str(len(body)))
            s.close()
        share = counts["base-model-v2"] / 200.0
        check(0.6 <= share <= 0.9, "weight 75 of 100 drew %.2f of requests" % share)


def test_objective_priority():
    with envoy.Kepp(manifests=HERMETIC) as k:
        # No metrics: the pool is saturated, so only priority < 0 is shed.
        eq(refused(k, llm_request("m", objective="sheddable-objective")), (429, MSG_SHED))
        for obj in ("sql-lora", "sql-lora-sheddable", "inference-objective-with-priority-4",
                    "no-such-objective", "other-pool-objective", None):
            s, hdr, body, _ = send_request(k, llm_request("m", objective=obj))
            check_routing(hdr, EPS)
            check("x-gateway-inference-objective" not in set_headers(hdr),
                  "objective header echoed")


# ---- §2.7 step 4: the forwarded body -------------------------------------------

ODD_BODY = ('{ "prompt" :  "caf\\u00e9 \\"q\\" <&> \u00fcber",\n  "model":"orig" ,'
            '"temperature":0.70, "n":1e2,"max_tokens":100,\t"z":[1, 2.50 ,{"a":null}] ,'
            '"big":12345678901234567890 }')


def test_body_forwarded_byte_exact_with_rewrite(kepp1):
    s, hdr, body, _ = send_request(kepp1, body_request(ODD_BODY.encode(),
                                                       headers=[("x-gateway-model-name-rewrite",
                                                                 "new-model")]))
    want = ODD_BODY.replace('"model":"orig"', '"model":"new-model"').encode()
    eq(body, want, "forwarded body")
    eq(set_headers(hdr)["Content-Length"], str(len(want)), "Content-Length")


def test_body_forwarded_unchanged_without_rewrite(kepp1):
    s, hdr, body, _ = send_request(kepp1, body_request(ODD_BODY.encode()))
    eq(body, ODD_BODY.encode(), "forwarded body")
    eq(set_headers(hdr)["Content-Length"], str(len(ODD_BODY.encode())), "Content-Length")


def test_body_model_value_only_changes(kepp1):
    body_in = '{"model" :\t"orig" , "prompt":"model orig \\"model\\":\\"orig\\""}'
    s, hdr, body, _ = send_request(kepp1, body_request(
        body_in, headers=[("x-gateway-model-name-rewrite", "t\u00e9st")]))
    want = '{"model" :\t"t\u00e9st" , "prompt":"model orig \\"model\\":\\"orig\\""}'
    check(json.loads(body)["model"] == "t\u00e9st", "model not rewritten: %r" % body)
    eq(body, want.encode(), "forwarded body")
    eq(set_headers(hdr)["Content-Length"], str(len(want.encode())), "Content-Length")


def check_chunks(chunks, total):
    sizes = [len(streamed(c)[0]) for c in chunks]
    eos = [streamed(c)[1] for c in chunks]
    eq(len(chunks), (total + 61999) // 62000, "number of body chunks %s" % sizes)
    check(all(n == 62000 for n in sizes[:-1]), "chunk sizes %s" % sizes)
    check(0 < sizes[-1] <= 62000, "last chunk size %s" % sizes)
    eq(eos, [False] * (len(chunks) - 1) + [True], "end_of_stream flags")


def test_large_body_comes_back_in_62000_byte_chunks(kepp1):
    body_in = completion_body_of_size(150000)
    s, hdr, body, chunks = send_request(kepp1, body_request(
        body_in, headers=[("x-gateway-model-name-rewrite", "bigger-model-name")]))
    want = body_in.replace('"model":"m"', '"model":"bigger-model-name"').encode()
    eq(body, want, "forwarded body")
    eq(set_headers(hdr)["Content-Length"], str(len(want)))
    check_chunks(chunks, len(want))


def completion_body_of_size(n):
    head = '{"model":"m","prompt":"'
    tail = '"}'
    return head + ("abcdefghij" * (n // 10 + 1))[:n - len(head) - len(tail)] + tail


def test_300k_body_sent_in_16k_chunks():
    """The full-body path (--early-pick=false): test_early covers the early
    answer of the same body."""
    with envoy.Kepp(endpoints=[EP1], extra=["--early-pick=false"]) as k:
        check_300k_in_16k_chunks(k)


def check_300k_in_16k_chunks(kepp1):
    body_in = completion_body_of_size(300 * 1024).encode()
    s = kepp1.stream()
    s.send(req_headers([(":path", "/v1/completions"), ("x-gateway-model-name-rewrite", "mm")]))
    step = 16 * 1024
    for off in range(0, len(body_in), step):
        last = off + step >= len(body_in)
        s.send(req_body(body_in[off:off + step], eos=last))
    hdr, body, chunks = route(s)
    want = body_in.replace(b'"model":"m"', b'"model":"mm"')
    eq(body, want, "forwarded body")
    eq(set_headers(hdr)["Content-Length"], str(len(want)))
    check_chunks(chunks, len(want))


def test_exactly_62000_and_62001_bytes(kepp1):
    for n in (62000, 62001):
        body_in = completion_body_of_size(n)
        s, hdr, body, chunks = send_request(kepp1, body_request(body_in))
        eq(body, body_in.encode())
        check_chunks(chunks, n)


def test_duplicate_eos_body_ignored(kepp1):
    s = kepp1.stream()
    body = '{"model":"m","prompt":"p"}'
    s.send(req_headers([("x-request-id", "r")]), req_body(body, eos=True))
    hdr, fwd, chunks = route(s)
    eq(fwd, body.encode())
    s.send(req_body(body, eos=True))  # envoy#46237: the same EoS chunk again
    s.expect_quiet(0.5)
    s.send(resp_headers([("content-type", "application/json")]))
    r = s.recv_n(1)[0]
    eq(kind(r), "response_headers", "answer after the duplicate")


# ---- response path (§2.9) ---------------------------------------------------------

def start_response(k, model="m", target=None):
    s, hdr, body, _ = send_request(k, llm_request(model, target=target))
    return s


def test_response_headers_echoed(kepp1):
    s = start_response(kepp1)
    s.send(resp_headers([(":status", "200"), ("content-type", "application/json"),
                         ("content-length", "57"), ("x-foo", "bar"),
                         ("x-gateway-destination-endpoint-served", "1.2.3.4:5")]))
    r = s.recv_n(1)[0]
    eq(kind(r), "response_headers")
    eq(set_headers(r), {"x-went-into-resp-headers": "true", ":status": "200",
                        "content-type": "application/json", "x-foo": "bar"},
       "response set_headers")


def test_response_json_buffered_until_eos(kepp1):
    s = start_response(kepp1)
    s.send(resp_headers([("content-type", "application/json")]))
    r = s.recv_n(1)[0]
    eq(set_headers(r), {"x-went-into-resp-headers": "true", "content-type": "application/json"})
    s.send(resp_body('{"max_tokens":100,"model":"sql-lo', eos=False))
    s.expect_quiet()
    s.send(resp_body('ra-sheddable","prompt":"test6","temperature":0}', eos=True))
    r = s.recv_n(1)[0]
    eq(kind(r), "response_body")
    eq(streamed(r), (b'{"max_tokens":100,"model":"sql-lora-sheddable","prompt":"test6",'
                     b'"temperature":0}', True))
    s.expect_quiet()


def test_response_invalid_json_passed_through(kepp1):
    s = start_response(kepp1)
    s.send(resp_headers([("content-type", "application/json")]))
    s.recv_n(1)
    s.send(resp_body("no healthy upstream", eos=True))
    r = s.recv_n(1)[0]
    eq(streamed(r), (b"no healthy upstream", True))


def test_response_empty_eos_chunk(kepp1):
    s = start_response(kepp1)
    s.send(resp_headers([("content-type", "application/json")]))
    s.recv_n(1)
    js = b'{"id":"x","object":"text_completion","usage":{"prompt_tokens":7}}'
    s.send(resp_body(js, eos=False))
    s.expect_quiet()
    s.send(resp_body(b"", eos=True))
    r = s.recv_n(1)[0]
    eq(streamed(r), (js, True))
    s.expect_quiet()


def test_response_large_json_chunked(kepp1):
    s = start_response(kepp1)
    s.send(resp_headers([("content-type", "application/json")]))
    s.recv_n(1)
    js = ('{"text":"' + "x" * 130000 + '"}').encode()
    for off in range(0, len(js), 50000):
        s.send(resp_body(js[off:off + 50000], eos=off + 50000 >= len(js)))
    n = (len(js) + 61999) // 62000
    rs = s.recv_n(n)
    eq(b"".join(streamed(r)[0] for r in rs), js)
    check_chunks(rs, len(js))


def test_response_sse_vllm_stream(kepp1):
    s = start_response(kepp1)
    s.send(resp_headers([("content-type", "text/event-stream; charset=utf-8")]))
    s.recv_n(1)
    chunks = [('data: {"id":"c","object":"text_completion","choices":[{"text":"t%d"}]}\n\n' % i)
              .encode() for i in range(5)]
    chunks.append(b'data: {"id":"c","object":"text_completion","choices":[],"usage":'
                  b'{"prompt_tokens":7,"total_tokens":17,"completion_tokens":10}}\n\n'
                  b'data: [DONE]\n\n')
    for c in chunks:
        s.send(resp_body(c, eos=False))
        eq(streamed(s.recv_n(1)[0]), (c, False))
    s.send(resp_body(b"", eos=True))
    eq(streamed(s.recv_n(1)[0]), (b"", True))


def test_response_stream_request_flag_makes_sse(kepp1):
    """"stream": true in the request marks the response streaming even
    without the text/event-stream content type."""
    s = kepp1.stream()
    s.send(*body_request('{"model":"m","prompt":"p","stream":true}'))
    route(s)
    s.send(resp_headers([("content-type", "application/json")]))
    s.recv_n(1)
    s.send(resp_body(b"data: {}\n\n", eos=False))
    eq(streamed(s.recv_n(1)[0]), (b"data: {}\n\n", False))


def test_response_model_rewritten_back_json(kepp1):
    s = start_response(kepp1, model="orig", target="tgt")
    s.send(resp_headers([("content-type", "application/json")]))
    s.recv_n(1)
    s.send(resp_body(b'{"id":"1","model":"tgt","object":"text_completion","choices":[]}'))
    eq(streamed(s.recv_n(1)[0]),
       (b'{"id":"1","model":"orig","object":"text_completion","choices":[]}', True))


def test_response_model_rewritten_back_sse(kepp1):
    s = start_response(kepp1, model="orig", target="tgt")
    s.send(resp_headers([("content-type", "text/event-stream")]))
    s.recv_n(1)
    s.send(resp_body(b'data: {"model":"tgt","x":1}\n\ndata: {"model":"tgt"}\n\n', eos=False))
    eq(streamed(s.recv_n(1)[0]), (b'data: {"model":"orig","x":1}\n\ndata: {"model":"orig"}\n\n',
                                  False))
    s.send(resp_body(b'data: {"model": "tgt"}\n\n', eos=True))
    eq(streamed(s.recv_n(1)[0]), (b'data: {"model": "orig"}\n\n', True))


def test_response_trailers(kepp1):
    s = start_response(kepp1)
    s.send(resp_headers([("content-type", "application/grpc")]))
    s.recv_n(1)
    s.send(resp_body(b"\x00\x00\x00\x00\x02hi", eos=False))
    s.expect_quiet()
    s.send(resp_trailers([("grpc-status", "0")]))
    b, t = s.recv_n(2)
    eq(streamed(b), (b"\x00\x00\x00\x00\x02hi", False), "body finished without EoS")
    eq(kind(t), "response_trailers")
    eq(t.response_trailers, envoy.ep.TrailersResponse(), "empty TrailersResponse")
    s.close()
    code, details, extra = s.finish()
    eq((code, extra), (grpc.StatusCode.OK, []), "end of stream (%s)" % details)


def test_response_trailers_after_sse(kepp1):
    s = start_response(kepp1)
    s.send(resp_headers([("content-type", "text/event-stream")]))
    s.recv_n(1)
    s.send(resp_body(b"data: {}\n\n", eos=False))
    eq(streamed(s.recv_n(1)[0]), (b"data: {}\n\n", False))
    s.send(resp_trailers())
    t = s.recv_n(1)[0]
    eq(kind(t), "response_trailers")
    eq(t.response_trailers, envoy.ep.TrailersResponse(), "empty TrailersResponse")


def test_system_headers_not_echoed(kepp1):
    h = [(":path", "/v1/completions"), (":method", "POST"), (":authority", "gw.example"),
         ("x-custom", "v"), ("x-request-id", "rid"), ("content-length", "999"),
         ("x-gateway-inference-fairness-id", "f"), ("x-gateway-inference-objective", "o"),
         ("x-gateway-model-name-rewrite", "m2"), ("x-gateway-destination-endpoint-subset", "s"),
         ("x-gateway-destination-endpoint", "9.9.9.9:1"),
         ("x-gateway-destination-endpoint-served", "9.9.9.9:2")]
    s = kepp1.stream()
    s.send(req_headers(h), req_body('{"model":"m","prompt":"p"}'))
    hdr, body, _ = route(s)
    eq(set_headers(hdr), {":path": "/v1/completions", ":method": "POST",
                          ":authority": "gw.example", "x-custom": "v", "x-request-id": "rid",
                          DEST: EP1, "Content-Length": str(len(body))}, "set_headers")
    eq(body, b'{"model":"m2","prompt":"p"}')


def test_request_id_lookup_case_insensitive(kepp1):
    s = kepp1.stream()
    s.send(req_headers([("X-Request-Id", "mixed-case")]), req_body('{"model":"m","prompt":"p"}'))
    hdr, body, _ = route(s)
    h = set_headers(hdr)
    check("x-request-id" not in h, "a request id was generated although X-Request-Id was "
          "given: %s" % h)


def test_duplicate_request_headers_last_wins(kepp1):
    s = kepp1.stream()
    s.send(req_headers([("x-dup", "first"), ("x-dup", "second")]),
           req_body('{"model":"m","prompt":"p"}'))
    hdr, body, _ = route(s)
    eq([v for k, v in set_header_list(hdr) if k == "x-dup"], ["second"], "x-dup values")


def test_ipv6_endpoints():
    eps = ["[::1]:8000", "[::1]:8001"]
    with envoy.Kepp(endpoints=eps) as k:
        (r,), s = k.exchange([req_headers([(":method", "GET")], eos=True)], 1)
        check_routing(r, eps)
        s, hdr, body, _ = send_request(k, llm_request("m", md=metadata(subset=["[::1]:8001"])))
        check_routing(hdr, eps)


FALLBACK_CONFIG = """\
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- type: max-score-picker
  parameters:
    maxNumOfEndpoints: 3
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue-scorer
  - pluginRef: max-score-picker
"""


def test_fallback_endpoint_list():
    with envoy.Kepp(config_text=FALLBACK_CONFIG) as k:
        s, hdr, body, _ = send_request(k, llm_request("m"))
        dest = set_headers(hdr)[DEST]
        eq(lb_metadata(hdr), dest, "envoy.lb metadata vs header")
        eq(sorted(dest.split(",")), sorted(EPS), "three distinct endpoints, no spaces")


PASSTHROUGH_CONFIG = """\
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- type: kv-cache-utilization-scorer
- type: passthrough-parser
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue-scorer
  - pluginRef: kv-cache-utilization-scorer
parser:
  pluginRef: passthrough-parser
"""


def test_passthrough_parser():
    """hermetic #6: the body is not parsed and goes through unchanged."""
    with envoy.Kepp(config_text=PASSTHROUGH_CONFIG, endpoints=[EP1]) as k:
        s = k.stream()
        s.send(req_headers([("hi", "mom"), ("x-request-id", "test-request-id"),
                            ("x-gateway-inference-objective", "my-model")]),
               req_body("passthrough-parser"))
        hdr, body, _ = route(s)
        eq(set_headers(hdr), {DEST: EP1, "Content-Length": "18", "hi": "mom",
                              "x-request-id": "test-request-id"})
        eq(body, b"passthrough-parser")


def test_model_not_in_objectives_split_body():
    """hermetic #13: objective and rewrite headers naming the same model,
    body split inside the model value."""
    with envoy.Kepp(manifests=HERMETIC, endpoints=[EP1]) as k:
        s = k.stream()
        s.send(req_headers([("hi", "mom"), ("x-gateway-inference-objective", "direct-model"),
                            ("x-gateway-model-name-rewrite", "direct-model"),
                            ("x-request-id", "test-request-id")]),
               req_body('{"max_tokens":100,"model":"direct-', eos=False),
               req_body('model","prompt":"test6","temperature":0}', eos=True))
        hdr, body, _ = route(s)
        eq(set_headers(hdr), {DEST: EP1, "Content-Length": "74", "hi": "mom",
                              "x-request-id": "test-request-id"})
        eq(body, b'{"max_tokens":100,"model":"direct-model","prompt":"test6","temperature":0}')


# ---- §2.11 BUFFERED mode --------------------------------------------------------

def test_buffered_mode(kepp1):
    s = kepp1.stream()
    proto = envoy.protocol(envoy.BUFFERED, envoy.BUFFERED)
    s.send(req_headers([(":path", "/v1/completions"), ("x-gateway-model-name-rewrite", "tgt")],
                       proto=proto))
    r = s.recv_n(1)[0]
    eq(kind(r), "request_headers", "immediate header answer in BUFFERED mode")
    check(r.request_headers.response.clear_route_cache, "clear_route_cache")
    s.send(req_body('{"model":"orig","prompt":"p"}', eos=True))
    r = s.recv_n(1)[0]
    eq(kind(r), "request_body")
    bm = r.request_body.response.body_mutation
    eq(bm.WhichOneof("mutation"), "body", "body mutation kind")
    eq(bm.body, b'{"model":"tgt","prompt":"p"}')
    h = set_headers(r)
    check(h.get(DEST) == EP1, "destination header %s" % h)
    eq(h.get("Content-Length"), str(len(bm.body)), "Content-Length")
    eq(lb_metadata(r), EP1, "envoy.lb metadata")
    # The response comes back whole; the model name is rewritten back.
    s.send(resp_headers([("content-type", "application/json")]))
    eq(kind(s.recv_n(1)[0]), "response_headers")
    s.send(resp_body(b'{"model":"tgt","choices":[]}', eos=True))
    r = s.recv_n(1)[0]
    eq(kind(r), "response_body")
    bm = r.response_body.response.body_mutation
    eq(bm.WhichOneof("mutation"), "body", "response body mutation kind")
    eq(bm.body, b'{"model":"orig","choices":[]}')


def test_buffered_mode_error(kepp1):
    s = kepp1.stream()
    s.send(req_headers([(":path", "/v1/completions")],
                       proto=envoy.protocol(envoy.BUFFERED, envoy.BUFFERED)))
    eq(kind(s.recv_n(1)[0]), "request_headers")
    s.send(req_body('{"prompt":"p"}', eos=True))
    eq(immediate(s.recv_n(1)[0]), (400, MSG_NO_MODEL))


# ---- conformance config (§4.4, §4.6, §8.1) -----------------------------------------

CONF_EPS = ["127.0.0.1:8000", "127.0.0.2:8000", "127.0.0.3:8000", "127.0.0.3:8002"]
CONF_BODY = '{"model": "conformance-fake-model", "prompt": "Write as if you were a critic: ' \
            'San Francisco"}'


def conf_request(selection=None, md=None):
    h = [(":path", "/primary-gateway-test"), (":method", "POST"),
         ("content-type", "application/json")]
    if selection is not None:
        h.append(("test-epp-endpoint-selection", selection))
    return [req_headers(h, md=md), req_body(CONF_BODY, md=md)]


def conf_dest(k, selection):
    s, hdr, body, _ = send_request(k, conf_request(selection))
    eq(body, CONF_BODY.encode(), "forwarded body")
    return check_routing(hdr, CONF_EPS)


def test_conformance_selects_ip(conformance):
    for ip in ("127.0.0.1", "127.0.0.2"):
        for _ in range(3):
            eq(conf_dest(conformance, ip), ip + ":8000")


def test_conformance_ip_port_exact(conformance):
    for _ in range(5):
        eq(conf_dest(conformance, "127.0.0.3:8002"), "127.0.0.3:8002")
        eq(conf_dest(conformance, "127.0.0.3:8000"), "127.0.0.3:8000")
    for _ in range(5):
        check(conf_dest(conformance, "127.0.0.3") in ("127.0.0.3:8000", "127.0.0.3:8002"),
              "bare IP picks one of its ports")


def test_conformance_unknown_ips_ignored(conformance):
    for _ in range(5):
        eq(conf_dest(conformance, "10.9.9.9,127.0.0.1,10.9.9.8:8000"), "127.0.0.1:8000")


def test_conformance_list_spreads(conformance):
    seen = [conf_dest(conformance, "127.0.0.1,127.0.0.2") for _ in range(30)]
    eq(set(seen), {"127.0.0.1:8000", "127.0.0.2:8000"}, "picks over 30 requests")


def test_conformance_missing_header_is_429(conformance):
    eq(refused(conformance, conf_request(None)),
       (429, "inference error: ResourceExhausted - failed to find target endpoint: "
             "failed to run scheduler profile 'conformance-profile'"))
    eq(refused(conformance, conf_request("10.9.9.9"))[0], 429)


def test_conformance_header_only_any_endpoint(conformance):
    (r,), s = conformance.exchange([req_headers([(":method", "GET")], eos=True)], 1)
    check_routing(r, CONF_EPS)


def served_header(k, md):
    s = k.stream()
    s.send(*conf_request("127.0.0.2"))
    route(s)
    s.send(resp_headers([("content-type", "application/json")], md=md))
    r = s.recv_n(1)[0]
    eq(kind(r), "response_headers")
    h = set_headers(r)
    eq(h.get("x-went-into-resp-headers"), "true")
    return h.get("x-conformance-test-served-endpoint")


def test_conformance_served_endpoint(conformance):
    eq(served_header(conformance, metadata(served="127.0.0.2:8000")), "127.0.0.2:8000")


def test_conformance_served_endpoint_missing(conformance):
    eq(served_header(conformance, None), "fail: missing envoy lb metadata")
    eq(served_header(conformance, metadata(lb={"other": "x"})),
       "fail: missing destination endpoint served metadata")


# ---- concurrency and robustness -----------------------------------------------

def run_many(k, channels, per_channel):
    streams = []
    for ch in channels:
        for i in range(per_channel):
            s = k.stream(ch)
            s.send(*llm_request("m", prompt="p%d" % i))
            streams.append((s, i))
    for s, i in streams:
        hdr, body, _ = route(s, timeout=30)
        check_routing(hdr, EPS)
        eq(json.loads(body)["prompt"], "p%d" % i, "body of its own stream")
        s.close()
    for s, i in streams:
        code, details, extra = s.finish(timeout=30)
        eq(code, grpc.StatusCode.OK, "stream end (%s)" % details)


def test_200_concurrent_streams_one_connection(kepp):
    run_many(kepp, [kepp.channel()], 200)


def test_concurrent_streams_several_connections(kepp):
    run_many(kepp, [kepp.channel(fresh_connection=True) for _ in range(5)], 40)


def test_malformed_protobuf_fails_stream_only(kepp):
    ch = kepp.channel()
    s = kepp.stream(ch)
    s.send(b"\x12\x7f\x0a\x02")  # request_headers claiming 127 bytes, 2 present
    code, details, extra = s.finish()
    check(code not in (None, grpc.StatusCode.OK), "malformed message accepted (%s)" % code)
    eq(extra, [], "responses to a malformed message")
    s, hdr, body, _ = send_request(kepp, llm_request("m"), channel=ch)
    check_routing(hdr, EPS)


def test_oversized_message_fails_stream_only():
    with envoy.Kepp(extra=["--max-message-bytes", "100000"]) as k:
        ch = k.channel()
        s = k.stream(ch)
        s.send(req_headers([(":path", "/v1/completions")]),
               req_body(completion_body_of_size(200000)))
        code, details, extra = s.finish()
        eq(code, grpc.StatusCode.RESOURCE_EXHAUSTED, "status of an oversized message")
        s, hdr, body, _ = send_request(k, llm_request("m"), channel=ch)
        check_routing(hdr, EPS)


VANISH = r"""
import os, sys, time
sys.path.insert(0, %(here)r)
import envoy
ch = envoy.grpc.insecure_channel("127.0.0.1:%(port)d")
s = envoy.Stream(ch)
s.send(envoy.req_headers([(":path", "/v1/completions")]),
       envoy.req_body('{"model":"m","prompt":"', eos=False))
time.sleep(0.5)
os._exit(0)
"""


def test_client_vanishes_mid_stream(kepp):
    here = os.path.dirname(os.path.abspath(__file__))
    for _ in range(3):
        p = subprocess.run([sys.executable, "-c", VANISH % {"here": here,
                                                            "port": kepp.grpc_port}],
                           env=dict(os.environ, BUILD=envoy.BUILD_DIR), timeout=30,
                           capture_output=True)
        eq(p.returncode, 0, "helper: " + p.stderr.decode())
    check(kepp.alive(), "kepp died")
    s, hdr, body, _ = send_request(kepp, llm_request("m"))
    check_routing(hdr, EPS)


def test_garbage_connections(kepp):
    for data in (b"", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
                 os.urandom(4096)):
        with socket.create_connection(("127.0.0.1", kepp.grpc_port), timeout=5) as c:
            c.sendall(data)
            c.settimeout(0.5)
            try:
                c.recv(65536)
            except (socket.timeout, ConnectionResetError):
                pass
    check(kepp.alive(), "kepp died")
    s, hdr, body, _ = send_request(kepp, llm_request("m"))
    check_routing(hdr, EPS)


def test_cancelled_stream(kepp):
    s = kepp.stream()
    s.send(req_headers([(":path", "/v1/completions")]), req_body('{"model":', eos=False))
    time.sleep(0.2)
    s.cancel()
    s, hdr, body, _ = send_request(kepp, llm_request("m"))
    check_routing(hdr, EPS)


# ---- TLS -------------------------------------------------------------------------

def test_tls_self_signed():
    with envoy.Kepp(tls=True) as k:
        pem, _ = envoy.server_cert(k.grpc_port)
        info = envoy.cert_info(pem)
        orgs = [v for rdn in info["subject"] for (key, v) in rdn if key == "organizationName"]
        eq(orgs, ["Inference Ext"], "certificate organization")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])
        with socket.create_connection(("127.0.0.1", k.grpc_port)) as raw:
            with ctx.wrap_socket(raw) as t:
                eq(t.selected_alpn_protocol(), "h2", "ALPN")
        s, hdr, body, _ = send_request(k, llm_request("m"))
        check_routing(hdr, EPS)
        check(s.code is None or s.code == grpc.StatusCode.OK, "stream failed")


def make_cert(d, cn):
    os.makedirs(d, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", os.path.join(d, "tls.key.new"),
                    "-out", os.path.join(d, "tls.crt.new"), "-subj", "/CN=" + cn,
                    "-addext", "subjectAltName=DNS:" + cn],
                   check=True, capture_output=True)
    os.replace(os.path.join(d, "tls.key.new"), os.path.join(d, "tls.key"))
    os.replace(os.path.join(d, "tls.crt.new"), os.path.join(d, "tls.crt"))
    with open(os.path.join(d, "tls.crt")) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def served_der(port):
    return ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", port)))


def test_tls_cert_path_and_reload():
    d = os.path.join(envoy.tempfile.mkdtemp(prefix="kepp-cert-"), "certs")
    try:
        der1 = make_cert(d, "kepp-one.test")
        with envoy.Kepp(tls=True, cert_path=d, extra=["--enable-cert-reload"]) as k:
            eq(served_der(k.grpc_port), der1, "served certificate")
            s, hdr, body, _ = send_request(k, llm_request("m"))
            check_routing(hdr, EPS)
            time.sleep(1.1)  # a different mtime second for the new files
            der2 = make_cert(d, "kepp-two.test")
            deadline = time.time() + 5
            while served_der(k.grpc_port) != der2 and time.time() < deadline:
                time.sleep(0.1)
            eq(served_der(k.grpc_port), der2, "certificate after reload")
            s, hdr, body, _ = send_request(k, llm_request("m"), channel=k.channel(True))
            check_routing(hdr, EPS)
    finally:
        shutil.rmtree(os.path.dirname(d), ignore_errors=True)


# ---- health ----------------------------------------------------------------------

def test_health_port(kepp):
    for svc in ("inference-extension", "", envoy.EXTPROC_SERVICE):
        eq(envoy.health_check(kepp.health_port, svc), envoy.SERVING, "health of %r" % svc)


def test_health_on_extproc_port_with_flag():
    with envoy.Kepp(health_checking=True) as k:
        eq(envoy.health_check(k.grpc_port, envoy.EXTPROC_SERVICE), envoy.SERVING)
        s, hdr, body, _ = send_request(k, llm_request("m"))
        check_routing(hdr, EPS)
    with envoy.Kepp(health_checking=True, tls=True) as k:
        pem, name = envoy.server_cert(k.grpc_port)
        eq(envoy.health_check(k.grpc_port, envoy.EXTPROC_SERVICE, pem=pem, tls_name=name),
           envoy.SERVING, "health over TLS")


def test_health_not_on_extproc_port_without_flag(kepp):
    try:
        envoy.health_check(kepp.grpc_port, envoy.EXTPROC_SERVICE)
    except grpc.RpcError as e:
        eq(e.code(), grpc.StatusCode.UNIMPLEMENTED)
    else:
        raise TestFailure("health answered on the ext_proc port without --health-checking")


def test_health_not_serving_without_pool():
    other = POOL_V1.replace("name: vllm-qwen3-32b-pool\n  namespace", "name: other\n  namespace")
    with envoy.Kepp(endpoints=None, manifests=other) as k:
        eq(envoy.health_check(k.health_port, "inference-extension"), envoy.NOT_SERVING)


# ---- SIGTERM -------------------------------------------------------------------

def test_sigterm_drains_streams_in_flight(kepp):
    s = kepp.stream()
    s.send(req_headers([(":path", "/v1/completions"), ("x-request-id", "r")]),
           req_body('{"model":"m",', eos=False))
    time.sleep(0.3)
    kepp.signal(signal.SIGTERM)
    time.sleep(0.3)
    check(kepp.alive(), "kepp exited with a stream in flight")
    s.send(req_body('"prompt":"p"}', eos=True))
    hdr, body, _ = route(s)
    eq(body, b'{"model":"m","prompt":"p"}')
    s.send(resp_headers([("content-type", "application/json")]), resp_body(b"{}", eos=True))
    s.recv_n(2)
    s.close()
    code, details, extra = s.finish()
    eq(code, grpc.StatusCode.OK, "drained stream status (%s)" % details)
    eq(kepp.wait(10), 0, "exit code")
    logs = kepp.logs()
    check(any("drain" in str(l.get("msg", "")) for l in logs), "no drain log line")


def test_sigterm_drain_timeout():
    with envoy.Kepp(drain_timeout="1s") as k:
        s = k.stream()
        s.send(req_headers([(":path", "/v1/completions")]), req_body("{", eos=False))
        time.sleep(0.2)
        t0 = time.time()
        k.signal(signal.SIGTERM)
        eq(k.wait(10), 0, "exit code")
        dt = time.time() - t0
        check(0.5 <= dt <= 5, "exit after %.1fs with a 1s drain timeout" % dt)
        code, details, extra = s.finish()
        check(code != grpc.StatusCode.OK, "stream cut by the drain timeout ended OK")


def test_idle_sigterm_exits_quickly(kepp):
    t0 = time.time()
    kepp.signal(signal.SIGTERM)
    eq(kepp.wait(10), 0, "exit code")
    check(time.time() - t0 < 3, "idle kepp took %.1fs to exit" % (time.time() - t0))


def test_logs_are_json_lines(kepp):
    s, hdr, body, _ = send_request(kepp, llm_request("m"))
    lines = [l for l in kepp.stderr().splitlines() if l.strip()]
    check(lines, "no log lines")
    for l in lines:
        obj = json.loads(l)
        for key in ("level", "ts", "msg"):
            check(key in obj, "log line without %s: %s" % (key, l))


def test_threads_safe_parallel_clients(kepp):
    errors = []

    def worker(n):
        try:
            ch = kepp.channel(fresh_connection=True)
            for i in range(20):
                s, hdr, body, _ = send_request(kepp, llm_request("m", prompt="w%d-%d" % (n, i)),
                                               channel=ch)
                eq(json.loads(body)["prompt"], "w%d-%d" % (n, i))
                s.close()
        except Exception as e:  # reported below
            errors.append(repr(e))
    ts = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    eq(errors, [], "worker errors")
