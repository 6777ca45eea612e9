#!/usr/bin/python3
"""Writes the seed corpora, tests/fuzz/corpus/<target>/, from the unit tests'
own inputs (string literals of tests/unit/*.c after the preprocessor, so
macros such as HDR or POOL_V1 are expanded), deploy/examples/, and a few
hand-made inputs in each target's input format (see the target's header
comment). Run from the repository root with the generated protobuf headers in
$BUILD/gen (make BUILD=... $BUILD/.protos) and python3-protobuf classes in
$BUILD/py (make proto-py). Files are named by content hash, so rerunning adds
nothing twice; delete a corpus folder first to regenerate it."""
import glob
import hashlib
import os
import re
import struct
import subprocess
import sys

BUILD = os.environ.get("BUILD", "build")
MAX_SEED = 8192
MAX_PER_TARGET = 80


def literals(path):
    """Adjacent-concatenated C string literals of |path| after cpp."""
    cflags = subprocess.run(["pkg-config", "--cflags", "libcjson", "yaml-0.1"],
                            capture_output=True, text=True).stdout.split()
    out = subprocess.run(["gcc", "-E", "-D_GNU_SOURCE", "-Iuser", "-Itests",
                          "-I" + BUILD + "/gen"] + cflags + [path],
                         capture_output=True, text=True, check=True).stdout
    own, keep = False, []
    for line in out.splitlines():
        m = re.match(r'# \d+ "([^"]+)"', line)
        if m:
            own = m.group(1) == path
            continue
        if own:
            keep.append(line)
    text = "\n".join(keep)
    res = []
    tok = re.compile(r'"((?:[^"\\\n]|\\.)*)"|(\s+)|([^"\s]+)')
    cur = None
    for m in tok.finditer(text):
        if m.group(1) is not None:
            cur = (cur or b"") + unescape(m.group(1))
        elif m.group(2) is not None:
            continue
        else:
            if cur is not None:
                res.append(cur)
            cur = None
            # a character literal like '"' must not start a string
    if cur is not None:
        res.append(cur)
    return res


def unescape(s):
    out = bytearray()
    i = 0
    simple = {"n": 10, "t": 9, "r": 13, "0": 0, "\\": 92, '"': 34, "'": 39, "a": 7,
              "b": 8, "f": 12, "v": 11, "?": 63}
    while i < len(s):
        c = s[i]
        if c != "\\":
            out += c.encode()
            i += 1
            continue
        n = s[i + 1]
        if n == "x":
            j = i + 2
            while j < len(s) and s[j] in "0123456789abcdefABCDEF":
                j += 1
            out.append(int(s[i + 2:j], 16) & 255)
            i = j
        elif n in "01234567":
            j = i + 1
            while j < len(s) and j < i + 4 and s[j] in "01234567":
                j += 1
            out.append(int(s[i + 1:j], 8) & 255)
            i = j
        elif n == "u":
            out += chr(int(s[i + 2:i + 6], 16)).encode("utf-8", "surrogatepass")
            i += 6
        else:
            out.append(simple.get(n, ord(n)))
            i += 2
    return bytes(out)


def write(target, blobs):
    d = os.path.join("tests/fuzz/corpus", target)
    os.makedirs(d, exist_ok=True)
    seen = set()
    n = 0
    for b in blobs:
        if len(b) > MAX_SEED or b in seen:
            continue
        seen.add(b)
        name = hashlib.sha1(b).hexdigest()[:16]
        with open(os.path.join(d, name), "wb") as f:
            f.write(b)
        n += 1
        if n >= MAX_PER_TARGET:
            break
    print(f"{target}: {n} seeds")


def from_tests(files, pred):
    res = []
    for f in files:
        res += [b for b in literals(f) if pred(b)]
    return res


def examples():
    return [open(p, "rb").read() for p in sorted(glob.glob("deploy/examples/*.yaml"))]


def grpc_codec():
    def frame(payload, flag=0):
        return bytes([flag]) + struct.pack(">I", len(payload)) + payload
    hdr = bytes([0x40, 0x35, 0x20])  # max 4096, chunk seed, percent-encode cap 32
    return [
        hdr + frame(b"hello") + frame(b"") + frame(b"x" * 300),
        hdr + frame(b"\x0a\x00\x12\x02hi", 0) + frame(b"abc")[:6],
        hdr + frame(b"zipped", 1),
        hdr + frame(b"bad flag", 2),
        bytes([0x01, 0x07, 0x08]) + frame(b"y" * 100),
        hdr + b"\x00\x00\x00",
        bytes([0x40, 0x11, 0xff]) + "fail: é %\x7f\n".encode(),
    ]


def body(tests):
    api_of = {"completions": 0, "chat": 1, "responses": 2, "conversations": 3, "embeddings": 4}
    hand = [
        (1, b"food-review-1", b'{"model":"food-review","messages":[{"role":"user","content":"hi"}]}'),
        (0, b"m2", b'{ "model" : "m", "prompt": ["a", null], "stream": true, "x": [1e5, -0.5] }'),
        (0, "caf\u00e9\u2028".encode(), b'{"model":"\\u00e9\\ud83d\\ude00","model":"last","prompt":"p"}'),
        (2, b"\xff\xfe", b'{"model":"r","input":[{"type":"text"}],"instructions":"be"}'),
        (3, b"c", b'{"model":"c","items":[{"type":"message","role":"user","content":"x"}]}'),
        (4, b"", b'{"model":"e","input":"text"}'),
        (1, b"t", b'{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"t"},{"type":"image_url","image_url":{"url":"u"}}]}],"tools":[],"chat_template_kwargs":{}}'),
    ]
    res = [bytes([a, len(t)]) + t + b for a, t, b in hand]
    for i, b in enumerate(tests):
        res.append(bytes([i % 5, 3]) + b"new" + b)
    return res


def response(tests):
    hand = [
        b'{"object":"chat.completion","usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12,"prompt_token_details":{"cached_tokens":2}},"model":"food-review-1"}',
        b'{"object":"response","usage":{"input_tokens":3,"output_tokens":4,"total_tokens":7}}',
        b'data: {"model":"food-review-1","choices":[]}\n\ndata: {"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}\n\ndata: [DONE]\n\n',
        b'data: {"type":"response.completed","response":{"object":"response","usage":{"input_tokens":9,"output_tokens":1}}}\n',
        b'{"model": "food-review-1", "usage": null}',
    ]
    res = []
    for b in hand + tests:
        res.append(bytes([13]) + b"food-review-1" + bytes([11]) + b"food-review" + b)
    return res


def units():
    d = [b"250ms", b"1h2m3.5s", b"0", b"1.5us", "2\u00b5s".encode(), "3\u03bcs".encode(),
         b".5h", b"5", b"-1s", b"+1s", b"1e3s", b"0x10s", b" 1s", b"9999999999h"]
    q = [b"4Mi", b"1G", b"1.5k", b"100m", b"1e3", b"1E-2", b"+5", b"4MiB", b"", b"99999Ei",
         b"0x10", b"1n", b"2u", b".5Ki", b"1.", b"inf"]
    return [b"\x00" + x for x in d] + [b"\x01" + x for x in q]


def endpoints():
    specs = [b"10.0.0.1:8000", b"10.0.0.1, 10.0.0.2:9", b"[fd00::1]:8000,fd00::2",
             b"[::ffff:10.0.0.1]:1", b"10.0.0.1:0", b"10.0.0.1:65536", b"10.0.0.1,10.0.0.1",
             b"[10.0.0.1]:80", b"a:1", b",", b"10.0.0.001:8000", b"fe80::1%eth0"]
    return [bytes([i % 4]) + s for i, s in enumerate(specs)]


def extproc():
    sys.path.insert(0, BUILD + "/py")

    def rec(op, payload=b"", flags=0, md=0):
        return bytes([op, flags, md]) + struct.pack("<H", len(payload)) + payload

    def hdrs(path, extra=b""):
        return b":method=POST\n:path=" + path + b"\ncontent-type=application/json\n" + extra

    chat = b'{"model":"food-review","messages":[{"role":"user","content":"hello"}],"stream":true}'
    comp = b'{"model":"chat","prompt":"hi","max_tokens":4}'
    sse = (b'data: {"model":"food-review-1","choices":[{"text":"x"}]}\n\n'
           b'data: {"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}\n\n'
           b'data: [DONE]\n\n')
    seeds = [
        # streamed chat request, SSE response
        b"\x00" + rec(0, hdrs(b"/v1/chat/completions", b"x-request-id=r1\n"), md=0x09)
        + rec(1, chat[:20]) + rec(1, chat[20:], 1)
        + rec(3, b":status=200\ncontent-type=text/event-stream\n", md=0x40)
        + rec(4, sse[:40]) + rec(4, sse[40:], 1) + rec(7),
        # buffered request and response, InferenceModel target, objective
        b"\x01" + rec(0, hdrs(b"/v1/completions", b"x-gateway-inference-objective=batch\n"), md=0x07)
        + rec(1, comp, 1) + rec(3, b":status=200\n") + rec(4, b'{"model":"chat-v2","usage":{"prompt_tokens":1}}', 1),
        # GET without a body, then response with trailers
        b"\x02" + rec(0, b":method=GET\n:path=/v1/models\n", 1) + rec(3, b":status=200\n")
        + rec(4, b"[]") + rec(5, b"grpc-status=0\n"),
        # request trailers end the body; header rewrite; subset string form
        b"\x0a" + rec(0, hdrs(b"/v1/completions", b"x-gateway-model-name-rewrite=other\n"), 2, 0x18)
        + rec(1, comp) + rec(2, b"t=1\n"),
        # bad body, unknown model, no candidates
        b"\x04" + rec(0, hdrs(b"/v1/chat/completions"), md=0x38) + rec(1, b'{"model":', 1),
        b"\x00" + rec(0, hdrs(b"/v1/embeddings"), md=0x28) + rec(1, b'{"model":"e","input":"x"}', 1),
        # body over the 4 KiB limit, too many headers
        b"\x04" + rec(0, hdrs(b"/v1/completions")) + rec(1, b"{" + b" " * 5000 + b"}", 1),
        b"\x08" + rec(0, b"".join(b"h%d=v\n" % i for i in range(12))),
        # duplicate end-of-stream chunks, RST_STREAM at the end
        b"\x20" + rec(0, hdrs(b"/v1/completions")) + rec(1, comp, 1) + rec(1, comp, 1),
        # passthrough parser, conformance plugins with and without served metadata
        b"\x02" + rec(0, hdrs(b"/v1/completions")) + rec(1, b"not json", 1) + rec(3, b":status=200\n", md=0x80),
        b"\x01" + rec(0, hdrs(b"/v1/completions", b"test-epp-endpoint-selection=10.0.0.2:8000\n"))
        + rec(1, comp, 1) + rec(3, b":status=200\n", md=0x40),
        # a raw message that does not decode
        b"\x00" + rec(6, b"\x0a\xff\xff"),
    ]
    try:
        from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
        m = ep.ProcessingRequest()
        h = m.request_headers.headers.headers.add()
        h.key, h.raw_value = ":path", b"/v1/completions"
        m.request_headers.end_of_stream = False
        b = ep.ProcessingRequest()
        b.request_body.body = comp
        b.request_body.end_of_stream = True
        hint = b.metadata_context.filter_metadata["envoy.lb.subset_hint"]
        hint.fields["x-gateway-destination-endpoint-subset"].list_value.values.add().string_value = "10.0.0.1"
        seeds.append(b"\x00" + rec(6, m.SerializeToString()) + rec(6, b.SerializeToString()))
    except ImportError:
        print("extproc: no python classes in %s/py (make proto-py): raw seeds skipped" % BUILD)
    return seeds


def main():
    unit = "tests/unit/"
    is_json = lambda b: b[:1] in (b"{", b"[") and len(b) > 1
    write("grpc_codec", grpc_codec())
    write("body", body(from_tests([unit + "test_body.c", unit + "test_sched.c"], is_json)))
    write("response", response(from_tests([unit + "test_body.c"],
                                           lambda b: b"usage" in b or b.startswith(b"data: "))))
    write("prom", [b"\x00" + b for b in from_tests(
        [unit + "test_prom.c", unit + "test_extract.c", unit + "test_scrape.c"],
        lambda b: b"\n" in b and (b"# " in b or b"{" in b or b" " in b))]
        + [b"\x01" + b"# TYPE a histogram\na_bucket{le=\"1\"} 1\na_bucket{le=\"+Inf\"} 2\na_sum 3\na_count 2\n",
           b"\x07" + b"a 1\nb 2\nc 3\nd{x=\"\\n\\\\\\\"\"} NaN 17\n"])
    yamls = from_tests([unit + "test_yaml.c", unit + "test_manifest.c", unit + "test_config.c"],
                       lambda b: b":" in b and b"\n" in b)
    write("yaml", examples() + [b"a: &x [1, *x]\nb: {? [c]: d}\n", b"%YAML 1.1\n---\n- !!str 5\n- ~\n"] + yamls)
    write("manifest", [bytes([i % 64]) + b for i, b in enumerate(
        examples() + [b for b in yamls if b"apiVersion" in b and b"EndpointPickerConfig" not in b])])
    write("config", examples() + [b for b in yamls if b"EndpointPickerConfig" in b or b"plugins" in b])
    write("endpoints", endpoints())
    write("units", units())
    write("extproc", extproc())


if __name__ == "__main__":
    sys.exit(main())
