#!/usr/bin/python3
"""make demo: kepp's main job on an embedded default, with no Kubernetes.

Starts three HTTP model servers on loopback (127.0.0.2-4, port 18000) as the
InferencePool, starts kepp on them with example manifests, then plays Envoy:
for each request it asks kepp over ext_proc (h2c) where to go, sends the
request (with the body kepp returned) to the endpoint kepp picked, passes the
response back through kepp, and prints what happened.
"""
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BUILD = os.environ.get("BUILD", "build")
sys.path.insert(0, os.path.join(BUILD, "py"))

import grpc  # noqa: E402
from envoy.config.core.v3 import base_pb2  # noqa: E402
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep  # noqa: E402

POOL_IPS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
PORT = 18000
GRPC_PORT, HEALTH_PORT = 19002, 19003
METHOD = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"

MANIFESTS = """\
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata:
  name: demo-pool
  namespace: default
spec:
  selector:
    matchLabels:
      app: demo-model-server
  targetPorts:
  - number: 18000
  endpointPickerRef:
    name: kepp
    port:
      number: 9002
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceObjective
metadata:
  name: chat-critical
  namespace: default
spec:
  priority: 10
  poolRef:
    name: demo-pool
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceModelRewrite
metadata:
  name: llama-canary
  namespace: default
spec:
  poolRef:
    name: demo-pool
  rules:
  - matches:
    - model:
        type: Exact
        value: llama
    targets:
    - modelRewrite: llama-3.1-8b
      weight: 80
    - modelRewrite: llama-3.2-8b-canary
      weight: 20
"""


class ModelServer(BaseHTTPRequestHandler):
    """A tiny OpenAI-style server: answers with the model it was asked for."""

    def log_message(self, *a):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        model = json.loads(body).get("model", "") if body else ""
        out = json.dumps({"object": "text_completion", "model": model,
                          "choices": [{"text": "hello from " + self.server.server_address[0]}],
                          "usage": {"prompt_tokens": 5, "completion_tokens": 3,
                                    "total_tokens": 8}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST


def hdrs(pairs, eos=False):
    hm = base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode())
                                     for k, v in pairs])
    return ep.HttpHeaders(headers=hm, end_of_stream=eos)


class Stream:
    """One ext_proc stream (one HTTP request and its response), as Envoy runs it."""

    def __init__(self, channel):
        self.q = queue.Queue()
        call = channel.stream_stream(METHOD, request_serializer=lambda m: m.SerializeToString(),
                                     response_deserializer=ep.ProcessingResponse.FromString)
        self.responses = call(iter(self.q.get, None), timeout=10)

    def send(self, *msgs):
        for m in msgs:
            self.q.put(m)

    def recv(self, n):
        return [next(self.responses) for _ in range(n)]

    def close(self):
        self.q.put(None)


def ask_kepp(channel, method, path, headers, body, subset=None):
    """One request through ext_proc and the pool, as Envoy would do it."""
    s = Stream(channel)
    md = base_pb2.Metadata()
    if subset is not None:
        md.filter_metadata["envoy.lb.subset_hint"].update(
            {"x-gateway-destination-endpoint-subset": subset})
    pairs = [(":method", method), (":path", path)] + headers
    s.send(ep.ProcessingRequest(request_headers=hdrs(pairs, eos=body is None),
                                metadata_context=md))
    if body is not None:
        s.send(ep.ProcessingRequest(request_body=ep.HttpBody(body=body, end_of_stream=True)))
    first = s.recv(1)[0]
    if first.HasField("immediate_response"):
        s.close()
        ir = first.immediate_response
        return {"status": ir.status.code, "error": ir.body.decode()}
    hr = first.request_headers.response
    set_h = {h.header.key: h.header.raw_value.decode() for h in hr.header_mutation.set_headers}
    dest = set_h["x-gateway-destination-endpoint"]
    fwd = b""
    while body is not None:
        sb = s.recv(1)[0].request_body.response.body_mutation.streamed_response
        fwd += sb.body
        if sb.end_of_stream:
            break
    # Envoy's ORIGINAL_DST cluster: connect to the first endpoint of the list.
    host = dest.split(",")[0]
    req = urllib.request.Request("http://%s%s" % (host, path), data=fwd if body else None,
                                 method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        resp_body, ctype = r.read(), r.headers.get("content-type", "")
    # The response path through kepp on the same stream: headers, then the
    # body, with the model name rewritten back to what the client asked for.
    s.send(ep.ProcessingRequest(response_headers=hdrs([(":status", "200"),
                                                       ("content-type", ctype)])),
           ep.ProcessingRequest(response_body=ep.HttpBody(body=resp_body, end_of_stream=True)))
    back = s.recv(2)
    s.close()
    client_body = back[1].response_body.response.body_mutation.streamed_response.body
    fwd_model = json.loads(fwd).get("model") if body else "-"
    return {"status": 200, "dest": dest, "forwarded_model": fwd_model,
            "served_by": json.loads(resp_body)["choices"][0]["text"].split()[-1],
            "client_sees": json.loads(client_body).get("model") or "-"}


def main():
    servers = []
    for ip in POOL_IPS:
        s = ThreadingHTTPServer((ip, PORT), ModelServer)
        threading.Thread(target=s.serve_forever, daemon=True).start()
        servers.append(s)
    tmp = tempfile.mkdtemp(prefix="kepp-demo-")
    with open(os.path.join(tmp, "pool.yaml"), "w") as f:
        f.write(MANIFESTS)
    cmd = [os.path.join(BUILD, "kepp"), "--secure-serving=false",
           "--grpc-port", str(GRPC_PORT), "--grpc-health-port", str(HEALTH_PORT),
           "--endpoints", ",".join(POOL_IPS), "--manifests", tmp, "--pool-name", "demo-pool",
           "--kernel=off"]
    print("$ " + " ".join(cmd))
    kepp = subprocess.Popen(cmd)
    try:
        channel = grpc.insecure_channel("127.0.0.1:%d" % GRPC_PORT)
        grpc.channel_ready_future(channel).result(timeout=10)
        time.sleep(0.2)
        cases = [
            ("completion, model llama (80/20 rewrite)", "POST", "/v1/completions",
             [("content-type", "application/json")],
             b'{"model": "llama", "prompt": "Write a haiku about kernels", "max_tokens": 20}', None),
            ("chat, objective chat-critical", "POST", "/v1/chat/completions",
             [("x-gateway-inference-objective", "chat-critical")],
             b'{"model":"qwen","messages":[{"role":"user","content":"hi"}]}', None),
            ("gateway subset hint: only 127.0.0.3", "POST", "/v1/completions", [],
             b'{"model":"qwen","prompt":"pinned"}', ["127.0.0.3:18000"]),
            ("header rewrite to qwen-lora", "POST", "/v1/completions",
             [("x-gateway-model-name-rewrite", "qwen-lora")],
             b'{"model":"qwen","prompt":"rewrite me"}', None),
            ("GET without body: any endpoint", "GET", "/v1/models", [], None, None),
            ("missing model: 400", "POST", "/v1/completions", [],
             b'{"prompt":"no model"}', None),
            ("subset that matches nothing: 503", "POST", "/v1/completions", [],
             b'{"model":"qwen","prompt":"x"}', ["10.9.9.9:8000"]),
        ]
        for i in range(3):
            cases.append(("completion #%d, model llama" % (i + 2), "POST", "/v1/completions", [],
                          b'{"model":"llama","prompt":"again"}', None))
        print("\n%-40s %-6s %-17s %-22s %-10s %s" % ("request", "status", "picked",
                                                    "forwarded model", "served by",
                                                    "client sees model"))
        for name, method, path, h, body, subset in cases:
            r = ask_kepp(channel, method, path, h, body, subset)
            if r["status"] != 200:
                print("%-40s %-6d %s" % (name, r["status"], r["error"]))
            else:
                print("%-40s %-6d %-17s %-22s %-10s %s" % (name, 200, r["dest"],
                                                          r["forwarded_model"], r["served_by"],
                                                          r["client_sees"]))
        channel.close()
    finally:
        kepp.send_signal(signal.SIGTERM)
        rc = kepp.wait(timeout=10)
        for s in servers:
            s.shutdown()
        for f in os.listdir(tmp):
            os.unlink(os.path.join(tmp, f))
        os.rmdir(tmp)
    print("\nkepp exited with status %d after SIGTERM (drained)" % rc)
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
