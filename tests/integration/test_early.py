"""The early pick (--early-pick, default true): with FULL_DUPLEX_STREAMED and a
body in several messages, kepp answers the request headers once it knows the
model and the prompt the prefix-cache scorer hashes (16,384 characters with
the default config), then streams the body through.

Endpoints are loopback addresses nothing listens on: every endpoint scores
the same but for the prefix-cache scorer, whose index kepp fills itself, so
a prompt kepp has seen goes back to the same endpoint.
"""
import json
import re
import time
import urllib.request

import grpc

import envoy
from envoy import (BUFFERED, DEST, check, eq, immediate, kind, lb_metadata, protocol,
                   req_body, req_headers, req_trailers, set_headers, streamed)

EPS = envoy.DEFAULT_ENDPOINTS
BUDGET = 256 * 16 * 4  # maxPrefixBlocksToMatch x blockSizeTokens x 4 characters


def prompt_of(n, seed="x"):
    words = ("%s-alpha beta gamma delta epsilon zeta eta theta " % seed) * (n // 40 + 2)
    return words[:n]


def body_of(prompt, model="m", model_last=False, extra=""):
    p = json.dumps(prompt)
    if model_last:
        return ('{"prompt":%s,"max_tokens":7%s,"model":"%s"}' % (p, extra, model)).encode()
    return ('{"model":"%s","prompt":%s,"max_tokens":7%s}' % (model, p, extra)).encode()


def chunks_of(body, step):
    return [body[i:i + step] for i in range(0, len(body), step)]


def headers(path="/v1/completions", clen=None, rewrite=None):
    h = [(":path", path), ("content-type", "application/json"), ("x-request-id", "r1")]
    if clen is not None:
        h.append(("content-length", str(clen)))
    if rewrite is not None:
        h.append(("x-gateway-model-name-rewrite", rewrite))
    return h


def read_body(s, timeout=10):
    """Body responses up to end_of_stream: (bytes, number of messages)."""
    out, n = b"", 0
    while True:
        r = s.recv_n(1, timeout)[0]
        if kind(r) == "immediate_response":
            raise envoy.TestFailure("refused: %s %r" % immediate(r))
        eq(kind(r), "request_body", "body response")
        b, eos = streamed(r)
        out += b
        n += 1
        if eos:
            return out, n


def send_chunked(k, body, step=65536, hdrs=None, hold_last=True):
    """Sends the headers and every chunk but the last; returns the stream, the
    headers response (which must come before the last chunk) and the last
    chunk, unsent."""
    s = k.stream()
    parts = chunks_of(body, step)
    s.send(req_headers(hdrs or headers()))
    for p in parts[:-1]:
        s.send(req_body(p, eos=False))
    hdr = s.recv_n(1)[0]
    if kind(hdr) == "immediate_response":
        raise envoy.TestFailure("refused: %s %r" % immediate(hdr))
    eq(kind(hdr), "request_headers", "first response, before the last chunk")
    return s, hdr, parts[-1]


def full_decision(k, body, hdrs=None):
    """One message with end_of_stream: the full-body path."""
    s = k.stream()
    s.send(req_headers(hdrs or headers()), req_body(body, eos=True))
    hdr = s.recv_n(1)[0]
    eq(kind(hdr), "request_headers", "full-path answer")
    fwd, _ = read_body(s)
    s.close()
    return set_headers(hdr)[DEST], fwd


def test_headers_answered_before_the_last_chunk(kepp):
    body = body_of(prompt_of(300 * 1024))
    s, hdr, last = send_chunked(kepp, body, hdrs=headers(clen=len(body), rewrite="longer-model"))
    dest = set_headers(hdr)[DEST]
    check(dest in EPS, "destination %s" % dest)
    eq(lb_metadata(hdr), dest, "envoy.lb metadata")
    check(hdr.request_headers.response.clear_route_cache, "clear_route_cache")
    want = body.replace(b'"model":"m"', b'"model":"longer-model"')
    eq(set_headers(hdr)["Content-Length"], str(len(want)), "Content-Length, rewrite included")
    eq(set_headers(hdr)["x-request-id"], "r1", "echoed header")
    check("content-length" not in set_headers(hdr), "request content-length echoed")
    s.send(req_body(last, eos=True))
    fwd, n = read_body(s)
    eq(fwd, want, "forwarded body: the client's bytes, model rewritten")
    check(n >= 2, "body streamed in several messages (%d)" % n)
    s.close()
    code, details, extra = s.finish()
    eq((code, extra), (grpc.StatusCode.OK, []), "end of stream (%s)" % details)


def test_no_content_length_invented(kepp):
    body = body_of(prompt_of(100 * 1024))
    s, hdr, last = send_chunked(kepp, body, step=16384)
    check("Content-Length" not in set_headers(hdr), "Content-Length without a request one")
    s.send(req_body(last, eos=True))
    fwd, _ = read_body(s)
    eq(fwd, body, "forwarded body")


def test_same_pick_as_the_full_body_path():
    """The prompt kepp saw goes back to the endpoint that had it, whether the
    next request with that prompt is decided early or on its whole body."""
    prompt = prompt_of(40 * 1024, "shared")
    for early in ("true", "false"):
        with envoy.Kepp(extra=["--early-pick=" + early]) as k:
            seed_dest, _ = full_decision(k, body_of(prompt + " first"))
            for i in range(4):
                body = body_of(prompt + " request %d" % i + "z" * 70000)
                s = k.stream()
                s.send(req_headers(headers()))
                parts = chunks_of(body, 65536)
                for p in parts[:-1]:
                    s.send(req_body(p, eos=False))
                if early == "false":
                    s.expect_quiet(0.3)
                s.send(req_body(parts[-1], eos=True))
                hdr = s.recv_n(1)[0]
                eq(set_headers(hdr)[DEST], seed_dest,
                   "early-pick=%s request %d: destination" % (early, i))
                fwd, _ = read_body(s)
                eq(fwd, body, "forwarded body")
                s.close()


def test_chat_messages_and_model_straddling_chunks(kepp):
    msgs = [{"role": "system", "content": "sys \u00e9 " * 10},
            {"role": "user", "content": prompt_of(30000)}]
    body = json.dumps({"model": "chat-model-\u00e9", "messages": msgs,
                       "stream": True}).encode()
    cut = body.index(b"chat-model") + 4  # the model value split in two messages
    s = kepp.stream()
    s.send(req_headers(headers("/v1/chat/completions", rewrite="t")),
           req_body(body[:cut], eos=False))
    s.expect_quiet(0.3)
    s.send(req_body(body[cut:cut + BUDGET + 100], eos=False))
    hdr = s.recv_n(1)[0]
    eq(kind(hdr), "request_headers", "answer once the messages reach the budget")
    s.send(req_body(body[cut + BUDGET + 100:], eos=True))
    fwd, _ = read_body(s)
    want = json.loads(body)
    want["model"] = "t"
    eq(json.loads(fwd), want, "forwarded chat body")
    eq(fwd.replace(b'"model": "t"', b""), body.replace(b'"model": "chat-model-\\u00e9"', b""),
       "only the model's bytes changed")
    # The response knows the request asked for a stream.
    s.send(envoy.resp_headers([(":status", "200")]))
    r = s.recv_n(1)[0]
    eq(kind(r), "response_headers", "response headers")
    s.send(envoy.resp_body(b'data: {"model":"t"}\n\n', eos=False))
    b, eos = streamed(s.recv_n(1)[0])
    eq(b, b'data: {"model":"chat-model-\xc3\xa9"}\n\n', "SSE chunk answered at once, "
       "model rewritten back")


def test_invalid_after_the_early_answer(kepp):
    """The rest of the body is still checked: the stream ends with the full
    path's 400 instead of the rest of the body."""
    cases = [
        (body_of(prompt_of(30000))[:-1] + b',x}', "/v1/completions"),
        (body_of(prompt_of(30000), extra=',"n":1e999'), "/v1/completions"),
        (body_of(prompt_of(30000))[:-1], "/v1/completions"),
        (body_of(prompt_of(30000), extra=',"cache_salt":7'), "/v1/completions"),
    ]
    for body, path in cases:
        s = kepp.stream()
        s.send(req_headers(headers(path)), req_body(body, eos=True))
        want = immediate(s.recv_n(1)[0])
        eq(want[0], 400, "full path status for %r" % body[-40:])
        s, hdr, last = send_chunked(kepp, body, step=20000)
        got_body = b""
        while True:
            if len(got_body) >= len(body) - len(last):
                break
            got_body += streamed(s.recv_n(1)[0])[0]
        s.send(req_body(last, eos=True))
        r = s.recv_n(1)[0]
        eq(immediate(r), want, "error after the early answer for %r" % body[-40:])
        code, details, extra = s.finish()
        eq((code, extra), (grpc.StatusCode.OK, []), "stream end (%s)" % details)


def test_model_again_after_the_pick_is_refused(kepp):
    body = body_of(prompt_of(30000), extra=',"model":"other"')
    s, hdr, last = send_chunked(kepp, body, step=20000)
    s.send(req_body(last, eos=True))
    while True:
        r = s.recv_n(1)[0]
        if kind(r) == "immediate_response":
            break
    code, text = immediate(r)
    eq(code, 400, "status")
    check("model appears again" in text, text)


def test_model_last_falls_back_to_the_whole_body(kepp):
    body = body_of(prompt_of(200 * 1024), model_last=True)
    tail = body.index(b',"max_tokens"')
    s = kepp.stream()
    s.send(req_headers(headers(clen=len(body))))
    for p in chunks_of(body[:tail], 65536):
        s.send(req_body(p, eos=False))
    s.expect_quiet(0.5)
    s.send(req_body(body[tail:], eos=True))
    hdr = s.recv_n(1)[0]
    eq(kind(hdr), "request_headers", "answer at the end")
    eq(set_headers(hdr)["Content-Length"], str(len(body)), "Content-Length")
    fwd, n = read_body(s)
    eq(fwd, body, "forwarded body")
    eq(n, (len(body) + 61999) // 62000, "62000-byte chunks of the full path")


def test_early_pick_off():
    with envoy.Kepp(extra=["--early-pick=false"]) as k:
        body = body_of(prompt_of(100 * 1024))
        s = k.stream()
        s.send(req_headers(headers()))
        parts = chunks_of(body, 65536)
        for p in parts[:-1]:
            s.send(req_body(p, eos=False))
        s.expect_quiet(0.5)
        s.send(req_body(parts[-1], eos=True))
        eq(kind(s.recv_n(1)[0]), "request_headers", "answer after the last chunk")
        fwd, _ = read_body(s)
        eq(fwd, body, "forwarded body")


def test_trailers_after_an_early_answer(kepp):
    body = body_of(prompt_of(50000))
    s, hdr, last = send_chunked(kepp, body, step=20000)
    s.send(req_body(last, eos=False), req_trailers([("grpc-status", "0")]))
    got = b""
    while True:
        r = s.recv_n(1)[0]
        if kind(r) == "request_trailers":
            break
        b, eos = streamed(r)
        check(not eos, "end_of_stream before the trailers")
        got += b
    eq(got, body, "forwarded body")


def test_buffered_mode_untouched(kepp):
    body = body_of(prompt_of(50000))
    s = kepp.stream()
    s.send(req_headers(headers(), proto=protocol(request_body_mode=BUFFERED)))
    r = s.recv_n(1)[0]
    eq(kind(r), "request_headers", "BUFFERED: headers answered at once")
    check(DEST not in set_headers(r), "no destination before the body")
    s.send(req_body(body, eos=True))
    r = s.recv_n(1)[0]
    eq(kind(r), "request_body", "BUFFERED body answer")
    check(set_headers(r).get(DEST) in EPS, "destination on the body answer")


def metric(k, name):
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % k.metrics_port,
                                  timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^%s(\{[^}]*\})? (\S+)$" % re.escape(name), line)
        if m:
            total += float(m.group(2))
    return total


def test_request_metrics_count_the_whole_body(kepp):
    body = body_of(prompt_of(150 * 1024))
    s, hdr, last = send_chunked(kepp, body)
    s.send(req_body(last, eos=True))
    read_body(s)
    s.close()
    s.finish()
    time.sleep(0.2)
    eq(metric(kepp, "inference_objective_request_total"), 1.0, "request_total")
    eq(metric(kepp, "inference_objective_request_sizes_sum"), float(len(body)),
       "request size: the whole forwarded body")
    eq(metric(kepp, "inference_objective_request_sizes_count"), 1.0, "request_sizes count")


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_body_limit_after_the_early_answer():
    """Past --max-body-bytes the stream still ends with the 400, and the body
    passed through is not held: memory stays flat while 48 MB stream by."""
    limit = 48 << 20
    with envoy.Kepp(workers=1, extra=["--max-body-bytes", str(limit)]) as k:
        s = k.stream()
        s.send(req_headers(headers()),
               req_body(b'{"model":"m","prompt":"' + b"y" * 62000, eos=False))
        eq(kind(s.recv_n(1)[0]), "request_headers", "early answer")
        chunk = b"x" * 62000
        sent, answer, before = 62000, None, None
        while answer is None and sent < 2 * limit:
            for _ in range(32):
                s.send(req_body(chunk, eos=False))
            sent += 32 * len(chunk)
            while True:
                r = s.recv(timeout=0.05)
                if r is None or kind(r) != "request_body":
                    answer = r
                    break
            if before is None and sent > 4 << 20:
                before = rss_kib(k.proc.pid)
        if answer is None:
            answer = s.recv_n(1)[0]
            while kind(answer) == "request_body":
                answer = s.recv_n(1)[0]
        peak = rss_kib(k.proc.pid) - before
        eq(immediate(answer), (400, "inference error: BadRequest - request body exceeds "
                                    "%d bytes" % limit))
        check(envoy.SANITIZED or peak < 16 << 10,
              "RSS grew %d KiB while 44 MB passed through" % peak)
        s.close()
