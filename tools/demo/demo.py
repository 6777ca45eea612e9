#!/usr/bin/python3
"""make demo: kepp's main job on an embedded default, with no Kubernetes.

Starts the model-server simulator ($BUILD/sim) with four vLLM-like pods on
loopback (127.0.1.1-4, port 18000) as the InferencePool, starts kepp on them
with example manifests, then plays Envoy: for each request it asks kepp over
ext_proc (h2c) where to go, sends the request (with the body kepp returned)
to the pod kepp picked, passes the response back through kepp, and prints
what happened; then a short concurrent workload, and a table per pod of what
kepp saw and did (queue, KV use, picks, prefix-cache hits).
"""
import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import collections
import time
import urllib.error
import urllib.request

BUILD = os.environ.get("BUILD", "build")
sys.path.insert(0, os.path.join(BUILD, "py"))

import grpc  # noqa: E402
from envoy.config.core.v3 import base_pb2  # noqa: E402
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep  # noqa: E402

POOL_IPS = ["127.0.1.1", "127.0.1.2", "127.0.1.3", "127.0.1.4"]
PORT = 18000
GRPC_PORT, HEALTH_PORT, METRICS_PORT = 19002, 19003, 19090
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
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            resp_body, ctype = r.read(), r.headers.get("content-type", "")
            served_by = r.headers.get("x-sim-instance", "?")
    except urllib.error.HTTPError as e:
        s.close()
        return {"status": e.code, "error": "model server: " + e.read().decode()[:80]}
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
            "served_by": served_by,
            "client_sees": (json.loads(client_body).get("model") or "-") if client_body else "-"}


def metric(text, name, default=0.0):
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return default


def lora_adapters(text):
    """Running adapters from vllm:lora_requests_info (the newest series)."""
    best, names = -1.0, ""
    for line in text.splitlines():
        if not line.startswith("vllm:lora_requests_info{"):
            continue
        labels, value = line.rsplit(" ", 1)
        m = re.search(r'running_lora_adapters="([^"]*)"', labels)
        if m and float(value) > best:
            best, names = float(value), m.group(1)
    return names or "-"


def pod_rows(picks):
    rows = []
    for ip in POOL_IPS:
        with urllib.request.urlopen("http://%s:%d/metrics" % (ip, PORT), timeout=5) as r:
            t = r.read().decode()
        q, h = metric(t, "sim:prefix_cache_queries_total"), metric(t, "sim:prefix_cache_hits_total")
        rows.append("%-17s %6d %8d %6d %6.1f %12.0f%%  %s" % (
            "%s:%d" % (ip, PORT), picks["%s:%d" % (ip, PORT)],
            metric(t, "vllm:num_requests_running"), metric(t, "vllm:num_requests_waiting"),
            100 * metric(t, "vllm:kv_cache_usage_perc"), 100 * h / q if q else 0,
            lora_adapters(t)))
    return rows


TABLE_HEAD = "%-17s %6s %8s %6s %6s %13s  %s" % ("pod", "picks", "running", "queue", "KV %",
                                                 "prefix hits", "LoRA adapters")


def live_table(picks, done, started):
    """Redraws the pod table every half second while the workload runs (in
    place on a terminal, as snapshots every two seconds otherwise)."""
    tty = sys.stdout.isatty()
    drawn = 0
    while True:
        finished = done.wait(0.5 if tty else 2.0)
        rows = pod_rows(picks)
        head = "t=%4.1fs  %d requests answered" % (time.time() - started, sum(picks.values()))
        if tty and drawn:
            sys.stdout.write("\x1b[%dA" % drawn)
        lines = [head, TABLE_HEAD] + rows
        sys.stdout.write("".join("\x1b[2K" * tty + l + "\n" for l in lines))
        if not tty:
            sys.stdout.write("\n")
        sys.stdout.flush()
        drawn = len(lines)
        if finished:
            return


def workload(channel, picks):
    """Four users with long shared system prompts, 160 requests, 8 at a time,
    half of them to the LoRA-backed model "llama": kepp's prefix-cache scorer
    keeps each user's prompt on the pod that has it, the LoRA scorer the
    adapters where they are loaded."""
    systems = [("You are assistant %d. " % u) + ("Follow the house style guide. " * 120)
               for u in range(4)]
    jobs = queue.Queue()
    for i in range(160):
        jobs.put((i % 4, i))

    def worker():
        while True:
            try:
                u, i = jobs.get_nowait()
            except queue.Empty:
                return
            model = "llama" if u % 2 else "qwen"
            body = json.dumps({"model": model, "max_tokens": 24,
                               "prompt": systems[u] + "Question %d?" % i}).encode()
            r = ask_kepp(channel, "POST", "/v1/completions", [], body)
            if r["status"] == 200:
                picks[r["dest"]] += 1

    threads = [threading.Thread(target=worker) for _ in range(8)]
    done = threading.Event()
    table = threading.Thread(target=live_table, args=(picks, done, time.time()))
    table.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    table.join()


def main():
    sim = subprocess.Popen([os.path.join(BUILD, "sim"), "--instances", str(len(POOL_IPS)),
                            "--base-addr", POOL_IPS[0], "--port", str(PORT),
                            "--model", "qwen",
                            "--lora", "llama-3.1-8b,llama-3.2-8b-canary,qwen-lora",
                            "--time-scale", "0.5"],
                           stdout=subprocess.DEVNULL)
    for ip in POOL_IPS:
        for _ in range(200):
            if sim.poll() is not None:
                # Most often another simulator still holds these addresses.
                print("the simulator exited with %d (is port %d in use?)" % (sim.returncode, PORT))
                return 1
            try:
                urllib.request.urlopen("http://%s:%d/health" % (ip, PORT), timeout=1).read()
                break
            except OSError:
                time.sleep(0.02)
    tmp = tempfile.mkdtemp(prefix="kepp-demo-")
    with open(os.path.join(tmp, "pool.yaml"), "w") as f:
        f.write(MANIFESTS)
    cmd = [os.path.join(BUILD, "kepp"), "--secure-serving=false",
           "--grpc-port", str(GRPC_PORT), "--grpc-health-port", str(HEALTH_PORT),
           "--metrics-port", str(METRICS_PORT),
           "--endpoints", ",".join(POOL_IPS), "--manifests", tmp, "--pool-name", "demo-pool",
           "--kernel=off"]
    print("$ " + " ".join(cmd))
    kepp = subprocess.Popen(cmd)
    channel = grpc.insecure_channel("127.0.0.1:%d" % GRPC_PORT)
    try:
        grpc.channel_ready_future(channel).result(timeout=10)
        time.sleep(0.2)
        cases = [
            ("completion, model llama (80/20 rewrite)", "POST", "/v1/completions",
             [("content-type", "application/json")],
             b'{"model": "llama", "prompt": "Write a haiku about kernels", "max_tokens": 20}', None),
            ("chat, objective chat-critical", "POST", "/v1/chat/completions",
             [("x-gateway-inference-objective", "chat-critical")],
             b'{"model":"qwen","messages":[{"role":"user","content":"hi"}]}', None),
            ("gateway subset hint: only 127.0.1.3", "POST", "/v1/completions", [],
             b'{"model":"qwen","prompt":"pinned"}', ["127.0.1.3:18000"]),
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
        print("\nA workload through kepp: 4 users with long shared system prompts, "
              "160 requests, 8 at a time, half to LoRA adapters (live):\n")
        picks = collections.Counter()
        workload(channel, picks)
    finally:
        channel.close()
        # kepp first: with the pods stopped first its last scrapes would
        # log failures that say nothing about the demo.
        kepp.send_signal(signal.SIGTERM)
        try:
            rc = kepp.wait(timeout=10)
        except subprocess.TimeoutExpired:
            kepp.kill()
            rc = kepp.wait()
        sim.send_signal(signal.SIGTERM)
        sim.wait(timeout=10)
        for f in os.listdir(tmp):
            os.unlink(os.path.join(tmp, f))
        os.rmdir(tmp)
    print("\nkepp exited with status %d after SIGTERM (drained)" % rc)
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
