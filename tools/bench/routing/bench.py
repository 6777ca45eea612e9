#!/usr/bin/python3
"""Routing-quality benchmark: how good are kepp's picks?

Plays Envoy. For each request it asks kepp over ext_proc (request headers and
body, FULL_DUPLEX_STREAMED) for a pod, reads the pick from
x-gateway-destination-endpoint, sends the (forwarded) body to that simulated
pod ($BUILD/sim) as a streaming completion and measures time to first token
(TTFT, from the request's scheduled arrival, so the pick counts), inter-token
latency (ITL) and end-to-end latency. The response goes back through kepp on
the same stream (its headers, then the last SSE chunk with end_of_stream);
Envoy would pass every chunk, which this client skips to stay cheap: kepp's
picks do not depend on the response path.

Workloads (seeded, the same arrivals for every policy at a given rate):
  prefix    a few long shared system prompts, many different questions
  sharegpt  a ShareGPT-like mix: lognormal prompts 100-2000 tokens, outputs 50-500
  lora      a skewed mix of LoRA adapters over a few pods with few adapter slots
Policies, each on a fresh simulator (and a fresh kepp):
  round-robin, random   in the bench itself, no kepp
  least-queue           kepp, queue-scorer + max-score-picker
  kepp                  kepp's built-in default profile (no config)
  kepp-lora             kepp's profile for LoRA pools: the default profile plus
                        lora-affinity-scorer weight 3 with residentAdapters (adapters
                        kepp sent to a pod count as loaded there, in an LRU of the
                        pod's max_lora slots); deploy/examples/lora-config.yaml
  kepp-lora-ref         the reference's documented example: lora-affinity-scorer
                        weight 1, the reference's scorer
Arrivals are open loop (Poisson) at each rate of a sweep that reaches
saturation. The prefix-cache hit rate and the adapter loads come from the
simulator's counters (sim:prefix_cache_*_total, sim:lora_loads_total).

Needs $BUILD/kepp, $BUILD/sim and $BUILD/py, and Debian's python3 (it has grpcio):
  make && make proto-py
  /usr/bin/python3 tools/bench/routing/bench.py            # the sweep, ~9 minutes
  /usr/bin/python3 tools/bench/routing/bench.py --quick    # one rate per workload, ~95 s
  /usr/bin/python3 tools/bench/routing/bench.py --smoke    # seconds: does it work at all
The tables (Markdown) go to stdout, one progress line per run to stderr.
"""
import argparse
import asyncio
import json
import math
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

METHOD = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"
DEST = "x-gateway-destination-endpoint"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"

POLICIES = ["round-robin", "random", "least-queue", "kepp", "kepp-lora-ref", "kepp-lora"]

LEAST_QUEUE_CONFIG = """\
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

# The policies kepp serves, with their --config-text: None is the built-in
# default; the LoRA ones come from lora_config() in run_one.
KEPP_CONFIGS = {"least-queue": LEAST_QUEUE_CONFIG, "kepp": None, "kepp-lora": None,
                "kepp-lora-ref": None}


def lora_config(weight, resident):
    """kepp's LoRA profile, deploy/examples/lora-config.yaml (the built-in
    default, queue 2, KV 2, prefix 3, plus LoRA affinity), with the affinity
    weight set; without |resident| the scorer is the reference's (no
    residentAdapters), which at weight 1 is the reference's documented
    example."""
    with open(os.path.join(ROOT, "deploy", "examples", "lora-config.yaml")) as f:
        cfg = yaml.safe_load(f)
    for p in cfg["plugins"]:
        if p["type"] == "lora-affinity-scorer" and not resident:
            p.pop("parameters", None)
    for profile in cfg["schedulingProfiles"]:
        for ref in profile["plugins"]:
            if ref["pluginRef"] == "lora-affinity-scorer":
                ref["weight"] = int(weight) if weight == int(weight) else weight
    return yaml.safe_dump(cfg, sort_keys=False)


WORDS = ("alpha beta gamma delta kernel socket packet route queue cache token model "
         "server batch prefix adapter latency stream gateway envoy picker score weight "
         "cluster node pod metric scrape sample window budget").split()

# Per workload: simulator flags and time scale, the rate sweep in requests/s
# (the last rate past saturation for every policy but the best), and the
# generator's parameters. Pod capacity is kept low enough that saturation
# comes at tens of requests/s, where this client's own lag stays in the low
# milliseconds (the tables show it). prefix: 16 system prompts of 2500 tokens
# are ~2500 KV blocks, more than a pod's 1024, so a pod can cache about a
# third of them (as with real, finite GPU caches) and where a prompt is sent
# decides whether it hits. lora: 8 adapters, Zipf popularity, 2 slots a pod
# and 200 ms (modelled) to load one.
WORKLOADS = {
    "prefix": {
        "sim": ["--num-gpu-blocks", "1024", "--max-num-seqs", "32"], "time_scale": 0.5,
        "rates": [20, 40, 60, 80],
        "quick_rates": [60],
        "policies": POLICIES[:4],  # kepp-lora* is kepp when no request names an adapter
        "groups": 16, "system_tokens": 2500, "question": (20, 120), "output": (16, 64),
    },
    "sharegpt": {
        "sim": ["--num-gpu-blocks", "1024", "--max-num-seqs", "16"], "time_scale": 1.0,
        "rates": [8, 16, 24, 32],
        "quick_rates": [24],
        "policies": POLICIES[:4],
        "prompt": (100, 2000, math.log(450), 0.8), "output": (50, 500, math.log(140), 0.6),
    },
    "lora": {
        "sim": ["--num-gpu-blocks", "2048", "--max-num-seqs", "32", "--max-loras", "2",
                "--lora-load-ms", "200"], "time_scale": 0.5,
        "rates": [5, 10, 20, 30],
        "quick_rates": [20],
        "policies": POLICIES,
        "adapters": 8, "zipf": 1.0,
        "prompt": (100, 1000, math.log(250), 0.7), "output": (20, 200, math.log(60), 0.6),
    },
}


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- workloads ----------------------------------------------------------------

class Text:
    """Cheap distinct prompt text: slices of one seeded random word stream."""

    def __init__(self, rng, nchars=1 << 21):
        parts, n = [], 0
        while n < nchars:
            w = rng.choice(WORDS)
            parts.append(w)
            n += len(w) + 1
        self.pool = " ".join(parts)

    def take(self, rng, tokens):
        n = tokens * 4  # the simulator and kepp count 4 characters a token
        off = rng.randrange(0, len(self.pool) - n)
        return self.pool[off:off + n]


def lognormal(rng, lo, hi, mu, sigma):
    return int(min(hi, max(lo, rng.lognormvariate(mu, sigma))))


def make_requests(name, w, rate, duration, seed):
    """[(arrival seconds, model, prompt, max_tokens)]: Poisson arrivals, the same
    for every policy at this (workload, rate, seed)."""
    rng = random.Random("%d:%s:%s" % (seed, name, rate))
    text = Text(random.Random("%d:text" % seed))
    systems = adapters = weights = None
    if name == "prefix":
        srng = random.Random("%d:systems" % seed)
        systems = ["System prompt %d. You answer for tenant %d. " % (g, g) +
                   text.take(srng, w["system_tokens"]) for g in range(w["groups"])]
    if name == "lora":
        adapters = ["adapter-%d" % i for i in range(w["adapters"])]
        weights = [1.0 / (i + 1) ** w["zipf"] for i in range(w["adapters"])]
    out, t = [], 0.0
    while True:
        t += rng.expovariate(rate)
        if t >= duration:
            return out
        if name == "prefix":
            g = rng.randrange(len(systems))
            prompt = systems[g] + "\nQuestion: " + text.take(rng, rng.randint(*w["question"]))
            model, max_tokens = MODEL, rng.randint(*w["output"])
        elif name == "sharegpt":
            prompt = text.take(rng, lognormal(rng, *w["prompt"]))
            model, max_tokens = MODEL, lognormal(rng, *w["output"])
        else:
            model = rng.choices(adapters, weights)[0]
            prompt = text.take(rng, lognormal(rng, *w["prompt"]))
            max_tokens = lognormal(rng, *w["output"])
        out.append((t, model, prompt, max_tokens))


def lora_flag(name, w):
    return ["--lora", ",".join("adapter-%d" % i for i in range(w["adapters"]))] \
        if name == "lora" else []


# ---- processes ----------------------------------------------------------------

class Procs:
    """A fresh simulator (and kepp, for kepp policies) for one run."""

    def __init__(self, args, sim_flags, time_scale, config, use_kepp):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="kepp-bench-")
        self.port = free_port()
        base = args.base_addr.split(".")
        self.addrs = [".".join(base[:3] + [str(int(base[3]) + i)])
                      for i in range(args.pods)]
        self.endpoints = ["%s:%d" % (a, self.port) for a in self.addrs]
        self.sim_args = [os.path.join(args.build_dir, "sim"), "--instances", str(args.pods),
                         "--base-addr", args.base_addr, "--port", str(self.port),
                         "--model", MODEL, "--time-scale", str(time_scale),
                         "--seed", str(args.seed)] + sim_flags
        self.kepp_args = None
        if use_kepp:
            self.grpc_port, self.health_port = free_port(), free_port()
            self.kepp_args = [os.path.join(args.build_dir, "kepp"), "--secure-serving=false",
                              "--kernel=off", "--grpc-port", str(self.grpc_port),
                              "--grpc-health-port", str(self.health_port),
                              "--metrics-port", str(free_port()),
                              "--endpoints", ",".join(self.endpoints),
                              "--refresh-metrics-interval", args.scrape]
            if config is not None:
                self.kepp_args += ["--config-text", config]
        self.sim = self.kepp = None

    def _spawn(self, argv, name):
        err = open(os.path.join(self.tmp, name + ".log"), "wb")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=err)
        err.close()
        return p

    def log(self, name):
        with open(os.path.join(self.tmp, name + ".log"), "rb") as f:
            return f.read().decode("utf-8", "replace")[-2000:]

    def start(self):
        self.sim = self._spawn(self.sim_args, "sim")
        deadline = time.time() + 10
        for a in self.addrs:
            while True:
                if self.sim.poll() is not None:
                    raise RuntimeError("sim exited with %d:\n%s" % (self.sim.returncode,
                                                                   self.log("sim")))
                try:
                    urllib.request.urlopen("http://%s:%d/health" % (a, self.port),
                                           timeout=1).read()
                    break
                except OSError:
                    if time.time() > deadline:
                        raise RuntimeError("sim never answered on " + a)
                    time.sleep(0.02)
        if self.kepp_args:
            self.kepp = self._spawn(self.kepp_args, "kepp")
            deadline = time.time() + 10
            while True:
                if self.kepp.poll() is not None:
                    raise RuntimeError("kepp exited with %d:\n%s" % (self.kepp.returncode,
                                                                    self.log("kepp")))
                try:
                    socket.create_connection(("127.0.0.1", self.grpc_port), 0.5).close()
                    break
                except OSError:
                    if time.time() > deadline:
                        raise RuntimeError("kepp never listened:\n" + self.log("kepp"))
                    time.sleep(0.02)
            time.sleep(0.3)  # a few scrapes, so kepp knows the pods' metrics

    def counters(self):
        tot = {"queries": 0.0, "hits": 0.0, "lora_loads": 0.0, "requests": 0.0}
        names = {"sim:prefix_cache_queries_total": "queries",
                 "sim:prefix_cache_hits_total": "hits",
                 "sim:lora_loads_total": "lora_loads", "sim:requests_total": "requests"}
        for a in self.addrs:
            with urllib.request.urlopen("http://%s:%d/metrics" % (a, self.port),
                                        timeout=5) as r:
                for line in r.read().decode().splitlines():
                    k = line.split(" ", 1)[0]
                    if k in names:
                        tot[names[k]] += float(line.rsplit(" ", 1)[1])
        return tot

    def stop(self):
        rcs = {}
        for name, p in (("kepp", self.kepp), ("sim", self.sim)):
            if p is None:
                continue
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            rcs[name] = p.returncode
        logs = {n: self.log(n) for n in rcs if rcs[n] != 0}
        shutil.rmtree(self.tmp, ignore_errors=True)
        return rcs, logs


# ---- Envoy's role ---------------------------------------------------------------

class Envoy:
    """ext_proc client: one Process stream per request, as Envoy's filter."""

    def __init__(self, port):
        import grpc
        from envoy.config.core.v3 import base_pb2
        from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as pm
        from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
        self.base_pb2, self.ep = base_pb2, ep
        self.proto = ep.ProtocolConfiguration(
            request_body_mode=pm.ProcessingMode.FULL_DUPLEX_STREAMED,
            response_body_mode=pm.ProcessingMode.FULL_DUPLEX_STREAMED)
        self.channel = grpc.aio.insecure_channel(
            "127.0.0.1:%d" % port, options=[("grpc.max_receive_message_length", 64 << 20)])
        self.process = self.channel.stream_stream(
            METHOD, request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=ep.ProcessingResponse.FromString)

    def headers(self, pairs, eos=False):
        hm = self.base_pb2.HeaderMap(headers=[self.base_pb2.HeaderValue(
            key=k, raw_value=v.encode()) for k, v in pairs])
        return self.ep.HttpHeaders(headers=hm, end_of_stream=eos)

    async def pick(self, path, body):
        """Opens the stream, sends headers and body; returns (stream, pick,
        forwarded body) or (None, "status: text", None) for an immediate response."""
        call = self.process()
        await call.write(self.ep.ProcessingRequest(
            request_headers=self.headers([(":method", "POST"), (":path", path),
                                          (":authority", "bench"),
                                          ("content-type", "application/json")]),
            protocol_config=self.proto))
        await call.write(self.ep.ProcessingRequest(
            request_body=self.ep.HttpBody(body=body, end_of_stream=True)))
        first = await call.read()
        if first.HasField("immediate_response"):
            ir = first.immediate_response
            call.cancel()
            return None, "%d %s" % (ir.status.code, ir.body.decode()[:100]), None
        dest = None
        for h in first.request_headers.response.header_mutation.set_headers:
            if h.header.key == DEST:
                dest = (h.header.raw_value or h.header.value.encode()).decode()
        fwd = b""
        while True:
            r = await call.read()
            sb = r.request_body.response.body_mutation.streamed_response
            fwd += sb.body
            if sb.end_of_stream:
                break
        return call, dest.split(",")[0], fwd

    async def respond(self, call, ctype, last_chunk):
        """The response path: headers, then the last body chunk with EoS."""
        await call.write(self.ep.ProcessingRequest(
            response_headers=self.headers([(":status", "200"), ("content-type", ctype)])))
        await call.read()
        await call.write(self.ep.ProcessingRequest(
            response_body=self.ep.HttpBody(body=last_chunk, end_of_stream=True)))
        while True:
            r = await call.read()
            if r.response_body.response.body_mutation.streamed_response.end_of_stream:
                break
        await call.done_writing()

    async def close(self):
        await self.channel.close()


class Result:
    __slots__ = ("arrival", "start", "picked", "first", "last", "done", "tokens", "pod",
                 "error")

    def __init__(self, arrival):
        self.arrival = arrival
        self.start = self.picked = self.first = self.last = self.done = None
        self.tokens = 0
        self.pod = None
        self.error = None


async def read_head(reader):
    status = await reader.readline()
    parts = status.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ConnectionError("bad status line %r" % status[:80])
    hdrs = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        k, _, v = line.decode("latin-1").partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return int(parts[1]), hdrs


async def read_chunks(reader, hdrs):
    """Yields the body's pieces (HTTP/1.1 chunked or until close)."""
    if "chunked" not in hdrs.get("transfer-encoding", ""):
        n = hdrs.get("content-length")
        yield await (reader.readexactly(int(n)) if n is not None else reader.read())
        return
    while True:
        size = int((await reader.readline()).split(b";")[0], 16)
        if size == 0:
            await reader.readline()
            return
        data = await reader.readexactly(size)
        await reader.readexactly(2)
        yield data


async def one_request(envoy, policy_pick, res, model, prompt, max_tokens, loop):
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens,
                       "stream": True, "stream_options": {"include_usage": True}}).encode()
    call = None
    writer = None
    try:
        res.start = loop.time()
        if envoy is not None:
            call, dest, fwd = await envoy.pick("/v1/completions", body)
            if call is None:
                res.error = "kepp: " + dest
                return
        else:
            dest, fwd = policy_pick(), body
        res.picked = loop.time()
        res.pod = dest
        host, port = dest.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: %s\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n" % (dest.encode(), len(fwd)) + fwd)
        status, hdrs = await read_head(reader)
        if status != 200:
            res.error = "pod: HTTP %d" % status
            return
        buf, last = b"", b""
        async for piece in read_chunks(reader, hdrs):
            now = loop.time()
            last = piece
            buf += piece
            while b"\n\n" in buf:
                frame, buf = buf.split(b"\n\n", 1)
                # Token chunks carry "text"; the usage chunk has empty choices.
                if b'"text":' in frame:
                    if res.first is None:
                        res.first = now
                    res.last = now
                    res.tokens += 1
        res.done = loop.time()
        if res.tokens != max_tokens:
            res.error = "got %d of %d tokens" % (res.tokens, max_tokens)
        if call is not None:
            await envoy.respond(call, hdrs.get("content-type", ""), last)
            call = None
    except asyncio.CancelledError:
        res.error = "timeout"
        raise
    except Exception as e:  # noqa: BLE001 (a failed request is a result, not a crash)
        res.error = "%s: %s" % (type(e).__name__, str(e)[:100])
    finally:
        if writer is not None:
            writer.close()
        if call is not None:
            call.cancel()


async def drive(requests, endpoints, policy, grpc_port, seed, drain):
    """Sends |requests| open loop; returns the results and the run's wall time."""
    loop = asyncio.get_running_loop()
    envoy = Envoy(grpc_port) if grpc_port else None
    rng = random.Random(seed)
    rr = [0]

    def bench_pick():
        if policy == "random":
            return rng.choice(endpoints)
        rr[0] += 1
        return endpoints[(rr[0] - 1) % len(endpoints)]

    if envoy is not None:  # connect before the clock starts
        await envoy.channel.channel_ready()
    results, tasks = [], []
    t0 = loop.time()
    for at, model, prompt, max_tokens in requests:
        delay = t0 + at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        res = Result(t0 + at)
        results.append(res)
        tasks.append(loop.create_task(one_request(envoy, bench_pick, res, model, prompt,
                                                  max_tokens, loop)))
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=drain)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending)
    if envoy is not None:
        await envoy.close()
    return results, loop.time() - t0


# ---- statistics -------------------------------------------------------------------

def pct(xs, p):
    """Linear-interpolated percentile; inf when it falls on a failed request."""
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100.0
    lo, hi = int(math.floor(k)), int(math.ceil(k))
    if math.isinf(xs[hi]):
        return float("inf")
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summarise(results, wall, counters):
    ok = [r for r in results if r.error is None]
    # A request that never produced a token counts as an infinite TTFT.
    ttft = [(r.first - r.arrival) * 1000 if r.first is not None else float("inf")
            for r in results]
    e2e = [r.done - r.arrival for r in ok]
    itl = [(r.last - r.first) * 1000 / (r.tokens - 1) for r in ok if r.tokens > 1]
    lag = [(r.start - r.arrival) * 1000 for r in results if r.start is not None]
    pick = [(r.picked - r.start) * 1000 for r in results if r.picked is not None]
    end = max([r.done for r in ok], default=None)
    span = (end - min(r.arrival for r in results)) if end is not None else wall
    errors = {}
    for r in results:
        if r.error is not None:
            key = r.error.split(":")[0] if not r.error.startswith("kepp") else r.error[:60]
            errors[key] = errors.get(key, 0) + 1
    pods = {}
    for r in results:
        if r.pod:
            pods[r.pod] = pods.get(r.pod, 0) + 1
    return {
        "requests": len(results), "ok": len(ok), "errors": errors,
        "ttft_p50": pct(ttft, 50), "ttft_p90": pct(ttft, 90), "ttft_p99": pct(ttft, 99),
        "itl_p50": pct(itl, 50), "e2e_p50": pct(e2e, 50), "e2e_p90": pct(e2e, 90),
        "throughput": len(ok) / span if span > 0 else 0.0,
        "tokens_per_s": sum(r.tokens for r in ok) / span if span > 0 else 0.0,
        "hit_rate": counters["hits"] / counters["queries"] if counters["queries"] else 0.0,
        "lora_loads": int(counters["lora_loads"]), "cache_queries": int(counters["queries"]),
        "sim_requests": int(counters["requests"]),
        "lag_p99": pct(lag, 99), "pick_p50": pct(pick, 50), "pick_p99": pct(pick, 99),
        "picks": dict(sorted(pods.items())),
    }


def fmt_ms(v):
    if math.isnan(v):
        return "-"
    if math.isinf(v):
        return "inf"
    return "%.0f" % v if v >= 10 else "%.1f" % v


def ratio(a, b):
    if math.isnan(a) or math.isnan(b) or b == 0 or math.isinf(b):
        return "-"
    if math.isinf(a):
        return "inf"
    return "%.2f" % (a / b)


def table(name, runs, time_scale):
    lines = ["### Workload `%s`" % name, "",
             "Wall-clock milliseconds (time scale %g: modelled time = wall / %g). "
             "vs RR: this policy's p90 TTFT and hit rate over round-robin's at the same rate."
             % (time_scale, time_scale), "",
             "| rate/s | policy | TTFT p50 | TTFT p90 | TTFT p99 | ITL p50 | E2E p90 s | req/s "
             "| tok/s | prefix hit | LoRA loads | errors | p90 TTFT vs RR | hit vs RR "
             "| pick p99 ms | lag p99 ms |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    rates = sorted({r for (r, _) in runs})
    for rate in rates:
        rr = runs.get((rate, "round-robin"))
        for policy in POLICIES:
            s = runs.get((rate, policy))
            if s is None:
                continue
            nerr = sum(s["errors"].values())
            lines.append("| %g | %s | %s | %s | %s | %s | %s | %.1f | %.0f | %.1f%% | %d | %s "
                         "| %s | %s | %s | %s |" % (
                             rate, policy, fmt_ms(s["ttft_p50"]), fmt_ms(s["ttft_p90"]),
                             fmt_ms(s["ttft_p99"]), fmt_ms(s["itl_p50"]),
                             "%.2f" % s["e2e_p90"] if not math.isnan(s["e2e_p90"]) else "-",
                             s["throughput"], s["tokens_per_s"], 100 * s["hit_rate"],
                             s["lora_loads"], nerr if nerr else "0",
                             ratio(s["ttft_p90"], rr["ttft_p90"]) if rr else "-",
                             ratio(s["hit_rate"], rr["hit_rate"]) if rr else "-",
                             fmt_ms(s["pick_p99"]) if policy in KEPP_CONFIGS else "-",
                             fmt_ms(s["lag_p99"])))
    return "\n".join(lines)


def goals(all_runs):
    """The issue's goals, checked at each workload's highest rate."""
    out = []
    pre = all_runs.get("prefix")
    if pre:
        top = max(r for (r, _) in pre)
        k, rr = pre.get((top, "kepp")), pre.get((top, "round-robin"))
        if k and rr:
            t_ok = k["ttft_p90"] <= 0.5 * rr["ttft_p90"]
            h_ok = k["hit_rate"] >= 2 * rr["hit_rate"]
            out.append("- prefix @ %g/s: kepp p90 TTFT %s ms vs round-robin %s ms (ratio %s, "
                       "goal <= 0.5): %s" % (top, fmt_ms(k["ttft_p90"]),
                                             fmt_ms(rr["ttft_p90"]),
                                             ratio(k["ttft_p90"], rr["ttft_p90"]),
                                             "met" if t_ok else "NOT met"))
            out.append("- prefix @ %g/s: kepp prefix-cache hit rate %.1f%% vs round-robin "
                       "%.1f%% (ratio %s, goal >= 2): %s" % (
                           top, 100 * k["hit_rate"], 100 * rr["hit_rate"],
                           ratio(k["hit_rate"], rr["hit_rate"]), "met" if h_ok else "NOT met"))
    lo = all_runs.get("lora")
    if lo:
        for rate in sorted({r for (r, _) in lo}):
            k = lo.get((rate, "kepp-lora"))
            others = {p: s["lora_loads"] for (r, p), s in lo.items()
                      if r == rate and not p.startswith("kepp-lora")}
            if k and others:
                best = min(others.values())
                out.append("- lora @ %g/s: kepp-lora %d adapter loads; others %s: %s" % (
                    rate, k["lora_loads"], ", ".join("%s %d" % kv for kv in others.items()),
                    "met" if k["lora_loads"] < best else "NOT met"))
    return "\n".join(out)


# ---- main ---------------------------------------------------------------------------

def time_scale(args, w):
    return args.time_scale if args.time_scale is not None else w["time_scale"]


def run_one(args, name, w, policy, rate):
    requests = make_requests(name, w, rate, args.duration, args.seed)
    use_kepp = policy in KEPP_CONFIGS
    config = KEPP_CONFIGS.get(policy)
    if policy == "kepp-lora":
        config = lora_config(args.lora_weight, resident=True)
    elif policy == "kepp-lora-ref":
        config = lora_config(1, resident=False)
    procs = Procs(args, w["sim"] + lora_flag(name, w), time_scale(args, w), config, use_kepp)
    try:
        procs.start()
        results, wall = asyncio.run(drive(requests, procs.endpoints, policy,
                                          procs.grpc_port if use_kepp else None,
                                          args.seed, args.drain))
        counters = procs.counters()
    finally:
        rcs, logs = procs.stop()
    s = summarise(results, wall, counters)
    s["exit"] = rcs
    for n, text in logs.items():
        sys.stderr.write("%s exited with %d; its log ends:\n%s\n" % (n, rcs[n], text))
    return s


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.environ.get("BUILD", "build"),
                    help="build folder with kepp, sim and py/ (default $BUILD or build)")
    ap.add_argument("--quick", action="store_true",
                    help="one rate per workload, near saturation (~95 s)")
    ap.add_argument("--smoke", action="store_true",
                    help="a few seconds: tiny runs that only check the tool works")
    ap.add_argument("--workloads", default="prefix,sharegpt,lora", help="comma list")
    ap.add_argument("--policies", help="comma list (default: every policy that differs on "
                    "the workload: %s)" % ", ".join(POLICIES))
    ap.add_argument("--rates", help="comma list of rates for every workload")
    ap.add_argument("--duration", type=float,
                    help="seconds of arrivals per run (default 6, --quick 4)")
    ap.add_argument("--drain", type=float, default=12.0,
                    help="seconds to wait for requests after the last arrival")
    ap.add_argument("--pods", type=int, default=4, help="simulated pods (default 4)")
    ap.add_argument("--time-scale", type=float,
                    help="simulator --time-scale for every workload (default: per workload)")
    ap.add_argument("--scrape", default="50ms", help="kepp --refresh-metrics-interval")
    ap.add_argument("--lora-weight", type=float, default=3.0,
                    help="lora-affinity-scorer weight of the kepp-lora policy (default 3)")
    ap.add_argument("--seed", type=int, default=1,
                    help="seed of the workloads and the simulator (default 1)")
    ap.add_argument("--base-addr", default="127.0.7.1",
                    help="address of the first pod; pod i listens on base + i")
    ap.add_argument("--json", help="also write every run's numbers to this file")
    args = ap.parse_args(argv[1:])
    args.build_dir = args.build if os.path.isabs(args.build) else os.path.join(ROOT, args.build)
    sys.path.insert(0, os.path.join(args.build_dir, "py"))
    for f in ("kepp", "sim"):
        if not os.access(os.path.join(args.build_dir, f), os.X_OK):
            ap.error("%s/%s is missing: make BUILD=%s" % (args.build, f, args.build))
    if not os.path.isdir(os.path.join(args.build_dir, "py", "envoy")):
        ap.error("%s/py is missing: make BUILD=%s proto-py" % (args.build, args.build))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    workloads = args.workloads.split(",")
    for x in workloads:
        if x not in WORKLOADS:
            ap.error("unknown workload %s" % x)
    for p in args.policies.split(",") if args.policies else ():
        if p not in POLICIES:
            ap.error("unknown policy %s" % p)
    if args.smoke:
        args.duration, args.drain = 0.6, 8.0
    elif args.duration is None:
        args.duration = 4.0 if args.quick else 6.0

    t_start = time.time()
    print("# routing benchmark: %d pods, %gs of arrivals per run, seed %d, kepp scrape %s"
          % (args.pods, args.duration, args.seed, args.scrape), flush=True)
    all_runs, dump = {}, []
    failed = False
    for name in workloads:
        w = WORKLOADS[name]
        rates = [float(r) for r in args.rates.split(",")] if args.rates else \
            [max(1, round(w["quick_rates"][0] / 3))] if args.smoke else \
            w["quick_rates"] if args.quick else w["rates"]
        policies = args.policies.split(",") if args.policies else \
            ["round-robin", w["policies"][-1]] if args.smoke else w["policies"]
        runs = {}
        for rate in rates:
            for policy in policies:
                t = time.time()
                s = run_one(args, name, w, policy, rate)
                runs[(rate, policy)] = s
                dump.append(dict(s, workload=name, policy=policy, rate=rate))
                if any(rc != 0 for rc in s["exit"].values()) or s["ok"] == 0:
                    failed = True
                print("  %-8s %5g/s %-12s %3d/%3d ok  TTFT p90 %6s ms  hit %5.1f%%  loads %3d"
                      "  lag p99 %s ms  (%.1fs)%s" % (
                          name, rate, policy, s["ok"], s["requests"], fmt_ms(s["ttft_p90"]),
                          100 * s["hit_rate"], s["lora_loads"], fmt_ms(s["lag_p99"]),
                          time.time() - t, "  errors %s" % s["errors"] if s["errors"] else ""),
                      file=sys.stderr, flush=True)
        all_runs[name] = runs
        print("\n" + table(name, runs, time_scale(args, w)), flush=True)
    g = goals(all_runs) if not args.smoke else ""
    if g:
        print("\n### Goals\n\n" + g)
    print("\nTotal %.0fs" % (time.time() - t_start))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dump, f, indent=1, default=str)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
