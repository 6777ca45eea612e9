"""The model-server simulator ($BUILD/sim): OpenAI endpoints (JSON and SSE),
LoRA load/unload, /metrics that move with load, prefix caching, faults, and
a clean exit on SIGTERM."""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import envoy
from envoy import TestFailure, check, eq

SIM = os.path.join(envoy.BUILD_DIR, "sim")
MODEL = "meta-llama/Llama-3.1-8B-Instruct"


class Sim:
    """One simulator process with |instances| instances on |base| + i
    (127.0.1.1, 127.0.1.2, ...). Separate Sim processes on distinct
    addresses make pods that can die alone (kill())."""

    def __init__(self, instances=2, extra=(), base="127.0.1.1"):
        self.port = envoy.free_port()
        b = base.split(".")
        self.addrs = [".".join(b[:3] + [str(int(b[3]) + i)]) for i in range(instances)]
        self.tmp = tempfile.mkdtemp(prefix="kepp-sim-")
        self.args = [SIM, "--instances", str(instances), "--base-addr", base,
                     "--port", str(self.port)] + list(extra)
        self.proc = None

    def __enter__(self):
        if not os.access(SIM, os.X_OK):
            raise TestFailure("%s is missing: build it first" % SIM)
        self.err = open(os.path.join(self.tmp, "stderr.log"), "wb")
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.err)
        deadline = time.time() + 10
        for a in self.addrs:
            while True:
                if self.proc.poll() is not None:
                    raise TestFailure("sim exited with %d:\n%s" % (self.proc.returncode,
                                                                   self.stderr()))
                try:
                    if self.get(a, "/health")[0] == 200:
                        break
                except OSError:
                    pass
                if time.time() > deadline:
                    raise TestFailure("sim never answered on " + a)
                time.sleep(0.02)
        return self

    def __exit__(self, et, ev, tb):
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    rc = self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
                    raise TestFailure("sim did not exit on SIGTERM")
                if et is None and rc != 0:
                    raise TestFailure("sim exited with %d:\n%s" % (rc, self.stderr()))
        finally:
            self.err.close()
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False

    def kill(self):
        """SIGKILL: the pod dies at once, its connections reset, nothing is
        flushed (a node failure or an OOM kill, from the network's side)."""
        self.proc.kill()
        self.proc.wait()

    def stderr(self):
        with open(os.path.join(self.tmp, "stderr.log"), "rb") as f:
            return f.read().decode("utf-8", "replace")

    def conn(self, addr, timeout=10):
        return http.client.HTTPConnection(addr, self.port, timeout=timeout)

    def request(self, addr, method, path, body=None, raw=None):
        c = self.conn(addr)
        try:
            data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                               else None)
            c.request(method, path, body=data, headers={"Content-Type": "application/json"})
            r = c.getresponse()
            return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
        finally:
            c.close()

    def get(self, addr, path):
        return self.request(addr, "GET", path)

    def post(self, addr, path, body=None, raw=None):
        return self.request(addr, "POST", path, body, raw)

    def metrics(self, addr, path="/metrics"):
        st, _, body = self.get(addr, path)
        eq(st, 200, "/metrics status")
        return parse_metrics(body.decode())

    def stream(self, addr, path, body):
        """Sends a streaming request; returns (list of (seconds since sent, data
        payload)), with the [DONE] sentinel kept as the string "[DONE]"."""
        c = self.conn(addr)
        t0 = time.time()
        try:
            c.request("POST", path, body=json.dumps(body).encode(),
                      headers={"Content-Type": "application/json"})
            r = c.getresponse()
            eq(r.status, 200, "stream status")
            check(r.getheader("content-type", "").startswith("text/event-stream"),
                  "SSE content type")
            out, buf = [], b""
            while True:
                chunk = r.read1(65536)
                if not chunk:
                    break
                buf += chunk
                while b"\n\n" in buf:
                    frame, buf = buf.split(b"\n\n", 1)
                    line = frame.decode()
                    check(line.startswith("data: "), "SSE frame %r" % line)
                    payload = line[6:]
                    out.append((time.time() - t0,
                                payload if payload == "[DONE]" else json.loads(payload)))
            eq(buf, b"", "bytes after the last SSE frame")
            return out
        finally:
            c.close()


def sim_fixture(**kw):
    return lambda: Sim(**kw)


FIXTURES = {"sim": sim_fixture()}

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')


def parse_metrics(text):
    """Prometheus text format to {name: [(labels, value)]}; every sample must
    follow a HELP and a TYPE line for its name."""
    out, typed = {}, set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        m = SAMPLE.match(line)
        check(m is not None, "bad sample line %r" % line)
        name = m.group(1)
        check(name in typed, "sample %s has no TYPE line" % name)
        labels = dict(LABEL.findall(m.group(3) or ""))
        out.setdefault(name, []).append((labels, float(m.group(4))))
    return out


def value(mx, name):
    return mx[name][0][1]


def completion(prompt="hello", max_tokens=4, **kw):
    b = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens}
    b.update(kw)
    return b


def test_endpoints_and_instance_header(sim):
    for a in sim.addrs:
        st, h, body = sim.post(a, "/v1/completions", completion(max_tokens=5))
        eq(st, 200, "completion status")
        eq(h["x-sim-instance"], "%s:%d" % (a, sim.port), "x-sim-instance")
        j = json.loads(body)
        eq(j["object"], "text_completion", "object")
        eq(j["model"], MODEL, "model")
        eq(j["choices"][0]["finish_reason"], "length", "finish_reason")
        eq(j["usage"]["completion_tokens"], 5, "completion_tokens")
        eq(j["usage"]["prompt_tokens"], 2, "prompt tokens of 'hello' (chars/4)")
        check(len(j["choices"][0]["text"]) > 0, "some text")
    st, _, body = sim.post(sim.addrs[0], "/v1/chat/completions",
                           {"model": MODEL, "max_tokens": 3,
                            "messages": [{"role": "user", "content": "hi there"}]})
    eq(st, 200, "chat status")
    j = json.loads(body)
    eq(j["object"], "chat.completion", "chat object")
    eq(j["choices"][0]["message"]["role"], "assistant", "role")
    eq(j["usage"]["completion_tokens"], 3, "chat completion_tokens")
    st, _, body = sim.get(sim.addrs[1], "/v1/models")
    eq(st, 200, "models status")
    eq([m["id"] for m in json.loads(body)["data"]], [MODEL], "models")


def test_bad_requests_answered_in_openai_shape():
    with Sim(instances=1, extra=["--max-body-bytes", "4096", "--max-model-len", "1000"]) as sim:
        a = sim.addrs[0]
        for raw, what in ((b"{not json", "bad JSON"), (b"[1,2]", "not an object")):
            st, h, body = sim.post(a, "/v1/completions", raw=raw)
            eq(st, 400, what)
            eq(h["content-type"], "application/json", what + " content type")
            err = json.loads(body)["error"]
            eq((err["type"], err["code"]), ("BadRequestError", 400), what)
        st, _, body = sim.post(a, "/v1/completions", completion(prompt=42))
        eq(st, 400, "prompt of the wrong type")
        st, _, body = sim.post(a, "/v1/completions", completion(max_tokens=-1))
        eq(st, 400, "negative max_tokens")
        st, _, body = sim.post(a, "/v1/completions", completion(model="nope"))
        eq(st, 404, "unknown model")
        eq(json.loads(body)["error"]["message"], "The model `nope` does not exist.", "message")
        st, _, body = sim.post(a, "/v1/completions", completion(max_tokens=999))
        eq(st, 400, "over max-model-len")
        check("maximum context length is 1000 tokens" in body.decode(), body)
        st, _, _ = sim.post(a, "/v1/completions", completion(prompt="x" * 8000))
        eq(st, 413, "body over --max-body-bytes")
        st, _, _ = sim.get(a, "/nope")
        eq(st, 404, "unknown path")
        eq(sim.post(a, "/v1/completions", completion())[0], 200, "still serving")


def test_sse_framing_and_usage(sim):
    a = sim.addrs[0]
    frames = sim.stream(a, "/v1/completions",
                        completion(max_tokens=6, stream=True,
                                   stream_options={"include_usage": True}))
    eq(frames[-1][1], "[DONE]", "last frame")
    usage = frames[-2][1]
    eq(usage["choices"], [], "usage chunk has no choices")
    eq(usage["usage"]["completion_tokens"], 6, "usage completion_tokens")
    eq(usage["usage"]["total_tokens"], usage["usage"]["prompt_tokens"] + 6, "total_tokens")
    toks = frames[:-2]
    eq(len(toks), 6, "one chunk per token")
    eq([f[1]["choices"][0]["finish_reason"] for f in toks], [None] * 5 + ["length"],
       "finish_reason only on the last token")
    check(all("usage" not in f[1] for f in toks), "no usage before the last chunk")

    frames = sim.stream(a, "/v1/chat/completions",
                        {"model": MODEL, "max_tokens": 3, "stream": True,
                         "messages": [{"role": "user", "content": "hi"}]})
    eq(frames[-1][1], "[DONE]", "chat last frame")
    eq(frames[0][1]["choices"][0]["delta"], {"role": "assistant", "content": ""}, "role chunk")
    eq(len(frames), 5, "role chunk, 3 tokens, [DONE] (no usage without include_usage)")
    eq(frames[0][1]["object"], "chat.completion.chunk", "chunk object")


def test_metrics_move_under_load():
    with Sim(instances=2, extra=["--max-num-seqs", "2", "--decode-ms", "20"]) as sim:
        a = sim.addrs[0]
        mx = sim.metrics(a)
        for name in ("vllm:num_requests_waiting", "vllm:num_requests_running",
                     "vllm:kv_cache_usage_perc", "vllm:lora_requests_info",
                     "vllm:cache_config_info"):
            check(name in mx, "missing " + name)
        eq(mx["vllm:cache_config_info"][0][0]["block_size"], "16", "block_size label")
        eq(mx["vllm:cache_config_info"][0][0]["num_gpu_blocks"], "4096", "num_gpu_blocks")
        eq(value(mx, "vllm:num_requests_waiting"), 0.0, "idle queue")
        results = []

        def one():
            results.append(sim.post(a, "/v1/completions", completion(max_tokens=25))[0])

        threads = [threading.Thread(target=one) for _ in range(6)]
        for t in threads:
            t.start()
        seen_wait = seen_run = seen_kv = 0.0
        deadline = time.time() + 5
        while time.time() < deadline and any(t.is_alive() for t in threads):
            mx = sim.metrics(a)
            seen_wait = max(seen_wait, value(mx, "vllm:num_requests_waiting"))
            seen_run = max(seen_run, value(mx, "vllm:num_requests_running"))
            seen_kv = max(seen_kv, value(mx, "vllm:kv_cache_usage_perc"))
            time.sleep(0.02)
        for t in threads:
            t.join(10)
        eq(results, [200] * 6, "statuses")
        check(seen_wait >= 3, "queue grew to %s, want >= 3 with 6 requests on 2 seats"
              % seen_wait)
        eq(seen_run, 2.0, "running never above --max-num-seqs")
        check(seen_kv > 0, "KV usage > 0 while running")
        mx = sim.metrics(a)
        eq((value(mx, "vllm:num_requests_waiting"), value(mx, "vllm:num_requests_running"),
            value(mx, "vllm:kv_cache_usage_perc")), (0.0, 0.0, 0.0), "idle again")
        eq(value(sim.metrics(sim.addrs[1]), "vllm:num_requests_running"), 0.0,
           "the other instance has its own engine")


def test_prefix_cache_cuts_ttft():
    with Sim(instances=1, extra=["--prefill-ms-per-token", "0.1"]) as sim:
        a = sim.addrs[0]
        prompt = "".join("sentence %d of a long shared system prompt. " % i
                         for i in range(400))  # ~4500 tokens: ~450ms of prefill
        body = completion(prompt=prompt, max_tokens=2, stream=True,
                          stream_options={"include_usage": True})
        first = sim.stream(a, "/v1/completions", body)
        second = sim.stream(a, "/v1/completions", body)
        t1, t2 = first[0][0], second[0][0]
        check(t1 > 0.3, "cold TTFT %.3fs should include the prefill" % t1)
        check(t2 < t1 / 3, "cached TTFT %.3fs not well below cold %.3fs" % (t2, t1))
        eq(first[-2][1]["usage"]["prompt_tokens_details"]["cached_tokens"], 0, "cold cached")
        check(second[-2][1]["usage"]["prompt_tokens_details"]["cached_tokens"] > 4000,
              "warm cached tokens")
        mx = sim.metrics(a)
        check(value(mx, "vllm:prefix_cache_hits_total") > 4000, "hits counter")
        # Another adapter or a reset cache pays the prefill again.
        eq(sim.post(a, "/reset_prefix_cache")[0], 200, "reset")
        third = sim.stream(a, "/v1/completions", body)
        check(third[0][0] > 0.3, "TTFT after reset %.3fs" % third[0][0])


def test_lora_adapters(sim):
    a = sim.addrs[0]
    st, _, body = sim.post(a, "/v1/load_lora_adapter",
                           {"lora_name": "sql-lora", "lora_path": "/adapters/sql"})
    eq((st, body.decode()), (200, "Success: LoRA adapter 'sql-lora' added successfully."),
       "load")
    eq(sim.post(a, "/v1/load_lora_adapter",
                {"lora_name": "sql-lora", "lora_path": "/adapters/sql"})[0], 400, "load twice")
    eq(sim.post(a, "/v1/load_lora_adapter", {"lora_name": "x"})[0], 400, "no lora_path")
    ids = [m["id"] for m in json.loads(sim.get(a, "/v1/models")[2])["data"]]
    eq(ids, [MODEL, "sql-lora"], "models with the adapter")
    eq(sim.post(sim.addrs[1], "/v1/completions", completion(model="sql-lora"))[0], 404,
       "adapters are per instance")

    done = []
    t = threading.Thread(target=lambda: done.append(
        sim.post(a, "/v1/completions", completion(model="sql-lora", max_tokens=40))[0]))
    t.start()
    seen = None
    deadline = time.time() + 3
    while time.time() < deadline and t.is_alive():
        info = sim.metrics(a)["vllm:lora_requests_info"]
        labels = max(info, key=lambda s: s[1])[0]
        eq(labels["max_lora"], "4", "max_lora")
        if labels["running_lora_adapters"]:
            seen = labels["running_lora_adapters"]
            break
        time.sleep(0.01)
    t.join(10)
    eq(done, [200], "adapter request status")
    eq(seen, "sql-lora", "running_lora_adapters while it runs")
    check(value(sim.metrics(a), "sim:lora_loads_total") == 1, "one adapter load")

    st, _, body = sim.post(a, "/v1/unload_lora_adapter", {"lora_name": "sql-lora"})
    eq((st, body.decode()), (200, "Success: LoRA adapter 'sql-lora' removed successfully."),
       "unload")
    eq(sim.post(a, "/v1/unload_lora_adapter", {"lora_name": "sql-lora"})[0], 404,
       "unload twice")
    eq(sim.post(a, "/v1/completions", completion(model="sql-lora"))[0], 404, "after unload")


def test_other_engines_metric_names():
    with Sim(instances=1, extra=["--engine", "sglang"]) as sim:
        mx = sim.metrics(sim.addrs[0])
        for name in ("sglang:num_queue_reqs", "sglang:num_running_reqs", "sglang:token_usage"):
            check(name in mx, "missing " + name)
        eq(mx["sglang:cache_config_info"][0][0]["page_size"], "16", "page_size")
        check("vllm:num_requests_waiting" not in mx, "no vllm names for sglang")
    with Sim(instances=1, extra=["--engine", "trtllm-serve", "--block-size", "32"]) as sim:
        mx = sim.metrics(sim.addrs[0], "/prometheus/metrics")
        for name in ("trtllm_num_requests_waiting", "trtllm_num_requests_running",
                     "trtllm_kv_cache_utilization", "trtllm_kv_cache_max_blocks"):
            check(name in mx, "missing " + name)
        eq(value(mx, "trtllm_kv_cache_tokens_per_block"), 32.0, "tokens per block")


def test_faults_flip_live_per_instance(sim):
    a, b = sim.addrs
    eq(sim.post(a, "/sim/fault", {"metrics": "sideways"})[0], 400, "bad fault")
    eq(sim.post(a, "/sim/fault", {"metrics": "fail"})[0], 200, "set fail")
    eq(sim.get(a, "/metrics")[0], 500, "failing /metrics")
    sim.metrics(b)  # the other instance is unaffected

    sim.post(a, "/sim/fault", {"metrics": "garbage"})
    st, _, body = sim.get(a, "/metrics")
    eq(st, 200, "garbage status")
    try:
        parse_metrics(body.decode("utf-8", "replace"))
        raise AssertionError("garbage parsed")
    except TestFailure:
        pass

    sim.post(a, "/sim/fault", {"metrics": "slow", "metrics_delay_ms": 400})
    t0 = time.time()
    sim.metrics(a)
    check(time.time() - t0 >= 0.35, "slow /metrics took %.3fs" % (time.time() - t0))

    st, _, body = sim.post(a, "/sim/fault", {"metrics": "ok", "http5xx": 1})
    eq(json.loads(body)["http5xx"], 1, "fault state echoed")
    st, _, body = sim.post(a, "/v1/completions", completion())
    eq(st, 503, "5xx fault")
    eq(json.loads(body)["error"]["code"], 503, "5xx body")

    sim.post(a, "/sim/fault", {"http5xx": 0, "drop": 1})
    try:
        st = sim.post(a, "/v1/completions", completion())[0]
        raise TestFailure("dropped connection answered %d" % st)
    except (http.client.HTTPException, ConnectionError, socket.timeout):
        pass
    eq(sim.post(b, "/v1/completions", completion())[0], 200, "other instance serves")
    sim.post(a, "/sim/fault", {"drop": 0})
    eq(sim.post(a, "/v1/completions", completion())[0], 200, "healed")
    sim.metrics(a)


def test_clean_shutdown_with_requests_in_flight():
    sim = Sim(instances=2, extra=["--decode-ms", "50"])
    with sim:
        c = sim.conn(sim.addrs[0])
        c.request("POST", "/v1/completions",
                  body=json.dumps(completion(max_tokens=1000, stream=True)).encode())
        r = c.getresponse()
        eq(r.status, 200, "stream started")
        r.read1(65536)
        sim.proc.send_signal(signal.SIGTERM)
        eq(sim.proc.wait(timeout=5), 0, "exit code after SIGTERM")
        rest = r.read()
        check(b"[DONE]" not in rest, "a cut stream does not claim to be complete")
        c.close()
        check('"simulator stopping"' in sim.stderr(), sim.stderr())


def test_bad_flags_refused():
    for args, want in ((["--no-such"], "unknown flag --no-such"),
                       (["--engine", "tgi"], 'invalid value "tgi" for flag --engine'),
                       (["--num-gpu-blocks", "10", "--max-model-len", "1000"],
                        "--max-model-len 1000 exceeds")):
        p = subprocess.run([SIM] + args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=5)
        eq(p.returncode, 2, "exit code for %s" % args)
        check(want in p.stderr.decode(), p.stderr.decode())
