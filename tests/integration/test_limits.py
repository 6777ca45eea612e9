"""Limits and hostile clients on the ext_proc port: a connection that never
speaks is closed after --handshake-timeout, --max-connections holds, TLS
below --tls-min-version is refused, and a client holding 1,000 silent
streams costs bounded memory while other clients are served."""
import os
import socket
import ssl
import time


import envoy
from envoy import TestFailure, check, eq, llm_request
from test_extproc import route
from test_startup import run_kepp

PROCESS = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"


def closed_by_peer(port, wait, send=b""):
    """Connects, optionally sends |send|, and returns how long the server
    took to close the connection (None if still open after |wait|)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=wait)
    t0 = time.time()
    try:
        if send:
            s.sendall(send)
        while True:
            try:
                data = s.recv(4096)
            except socket.timeout:
                return None
            except ConnectionResetError:
                return time.time() - t0
            if not data:
                return time.time() - t0
    finally:
        s.close()


def served(k, channel=None):
    s = k.stream(channel)
    s.send(*llm_request("m"))
    route(s)
    s.close()


def test_silent_connection_closed_after_handshake_timeout():
    with envoy.Kepp(extra=["--handshake-timeout", "500ms"]) as k:
        took = closed_by_peer(k.grpc_port, 5)
        check(took is not None and took < 3, "silent connection closed, took %r" % took)
        # Half a preface is not a greeting either.
        took = closed_by_peer(k.grpc_port, 5, send=b"PRI * HTTP/2.0\r\n")
        check(took is not None and took < 3, "half preface closed, took %r" % took)
        # A connection that did greet may idle far longer than the timeout.
        ch = k.channel()
        served(k, ch)
        time.sleep(1.5)
        served(k, ch)


def test_silent_tls_connection_closed():
    with envoy.Kepp(tls=True, extra=["--handshake-timeout", "500ms"]) as k:
        took = closed_by_peer(k.grpc_port, 5)
        check(took is not None and took < 3, "no ClientHello: closed, took %r" % took)
        served(k)


def test_max_connections():
    with envoy.Kepp(workers=1, extra=["--max-connections", "2"]) as k:
        a, b = k.channel(fresh_connection=True), k.channel(fresh_connection=True)
        served(k, a)
        served(k, b)
        took = closed_by_peer(k.grpc_port, 5)
        check(took is not None and took < 1, "third connection closed at once, took %r" % took)
        served(k, a)
        check(any("--max-connections reached" in (l.get("msg") or "") for l in k.logs()),
              k.stderr())
        # A closed connection frees its place.
        b.close()
        deadline = time.time() + 5
        while closed_by_peer(k.grpc_port, 0.5) is not None:
            check(time.time() < deadline, "a place never freed up")
            time.sleep(0.1)


def tls_version_accepted(port, version):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = version
    ctx.maximum_version = version
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw) as s:
                return s.version()
        except ssl.SSLError:
            return None


def test_tls_min_version():
    with envoy.Kepp(tls=True) as k:
        eq(tls_version_accepted(k.grpc_port, ssl.TLSVersion.TLSv1_2), "TLSv1.2")
        eq(tls_version_accepted(k.grpc_port, ssl.TLSVersion.TLSv1_3), "TLSv1.3")
    with envoy.Kepp(tls=True, extra=["--tls-min-version", "VersionTLS13"]) as k:
        eq(tls_version_accepted(k.grpc_port, ssl.TLSVersion.TLSv1_2), None, "TLS 1.2 refused")
        eq(tls_version_accepted(k.grpc_port, ssl.TLSVersion.TLSv1_3), "TLSv1.3")
        served(k)
    rc, err = run_kepp("--endpoints", "127.0.0.1:8000", "--secure-serving=true",
                       "--tls-min-version", "1.1")
    eq(rc, 2, "exit code")
    check("--tls-min-version" in err, err)


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise TestFailure("no VmRSS")


def _hpack_literal(name, value):
    """A literal header field without indexing, new name, no Huffman."""
    out = b"\x00"
    for part in (name.encode(), value.encode()):
        assert len(part) < 127
        out += bytes([len(part)]) + part
    return out


def _frame(ftype, flags, stream, payload=b""):
    return (len(payload).to_bytes(3, "big") + bytes([ftype, flags]) +
            stream.to_bytes(4, "big") + payload)


def open_silent_streams(port, n):
    """A raw HTTP/2 connection that opens |n| ext_proc streams (HEADERS
    only, never a message). Returns the socket once kepp has processed them
    all: the PING sent after them is acknowledged."""
    block = b"".join(_hpack_literal(k, v) for k, v in [
        (":method", "POST"), (":scheme", "http"), (":path", PROCESS),
        (":authority", "kepp"), ("content-type", "application/grpc"), ("te", "trailers")])
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(0x4, 0, 0)
    for i in range(n):
        out += _frame(0x1, 0x4, 2 * i + 1, block)
    out += _frame(0x6, 0, 0, b"silent!!")
    s.sendall(out)
    buf = b""
    while True:
        data = s.recv(65536)
        if not data:
            raise TestFailure("kepp closed the connection of silent streams")
        buf += data
        while len(buf) >= 9:
            ln = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + ln:
                break
            ftype, flags = buf[3], buf[4]
            if ftype == 0x7:
                raise TestFailure("kepp sent GOAWAY: %r" % buf[9:9 + ln])
            if ftype == 0x6 and flags & 1 and buf[9:9 + ln] == b"silent!!":
                return s
            buf = buf[9 + ln:]


def test_thousand_silent_streams_bounded():
    """1,000 streams that never send a message: each costs kepp a few KiB
    (bound asserted: 16 MiB for all), other clients are served meanwhile,
    and cancelling them gives the memory back to the allocator's pools."""
    with envoy.Kepp(workers=1) as k:
        served(k)
        before = rss_kib(k.proc.pid)
        s = open_silent_streams(k.grpc_port, 1000)
        try:
            grown = rss_kib(k.proc.pid) - before
            served(k)
        finally:
            s.close()
        check(envoy.SANITIZED or grown < 16 * 1024,
              "RSS grew %d KiB for 1,000 silent streams" % grown)
        print("# 1,000 silent streams: RSS +%d KiB" % grown)
        served(k)



def read_frames_until_close(s, wait):
    """Reads frames until the peer closes; returns the frame types seen."""
    s.settimeout(wait)
    seen, buf = [], b""
    try:
        while True:
            data = s.recv(65536)
            if not data:
                break
            buf += data
            while len(buf) >= 9:
                ln = int.from_bytes(buf[:3], "big")
                if len(buf) < 9 + ln:
                    break
                seen.append(buf[3])
                buf = buf[9 + ln:]
    except (socket.timeout, ConnectionResetError):
        pass
    return seen


def test_rst_stream_flood_is_cut_off():
    """The HTTP/2 rapid-reset attack (CVE-2023-44487): a client opening and
    resetting streams without end gets GOAWAY; others are served."""
    with envoy.Kepp(workers=1) as k:
        block = b"".join(_hpack_literal(a, b) for a, b in [
            (":method", "POST"), (":scheme", "http"), (":path", PROCESS),
            (":authority", "kepp"), ("content-type", "application/grpc")])
        s = socket.create_connection(("127.0.0.1", k.grpc_port), timeout=10)
        out = bytearray(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(0x4, 0, 0))
        for i in range(20000):
            out += _frame(0x1, 0x4, 2 * i + 1, block)
            out += _frame(0x3, 0, 2 * i + 1, (8).to_bytes(4, "big"))  # RST_STREAM CANCEL
        try:
            s.sendall(bytes(out))
        except (BrokenPipeError, ConnectionResetError):
            pass  # cut off before the flood was all written
        seen = read_frames_until_close(s, 10)
        s.close()
        check(0x7 in seen, "GOAWAY sent to the flooder (frames seen: %r)" % sorted(set(seen)))
        served(k)


def test_client_vanishing_mid_request():
    """Clients that disappear after the headers, mid-body, or mid-frame:
    kepp frees their streams and serves on (ASan runs check the freeing)."""
    with envoy.Kepp(workers=1) as k:
        before = rss_kib(k.proc.pid)
        for _ in range(200):
            s = open_silent_streams(k.grpc_port, 20)
            # Half a gRPC message on stream 1, then half a frame header.
            msg = b"\x00\x00\x00\x10\x00" + b"\x0a\x02"
            s.sendall(_frame(0x0, 0, 1, msg) + b"\x00\x00")
            s.close()
        served(k)
        grown = rss_kib(k.proc.pid) - before
        check(envoy.SANITIZED or grown < 8 * 1024,
              "RSS grew %d KiB after 4,000 abandoned streams" % grown)


def test_hundred_megabyte_body_refused_with_bounded_memory():
    """A 100 MB prompt sent in Envoy-sized chunks: the 400 comes once the
    body passes --max-body-bytes, kepp holds at most that much for it, and
    frees it when the stream ends. (The whole-body path: test_early covers
    the limit after an early answer.)"""
    limit = 8 << 20
    with envoy.Kepp(workers=1, extra=["--max-body-bytes", str(limit),
                                      "--early-pick=false"]) as k:
        before = rss_kib(k.proc.pid)
        s = k.stream()
        chunk = b"x" * 62000
        s.send(envoy.req_headers([(":path", "/v1/completions"), (":method", "POST")]))
        s.send(envoy.req_body(b'{"model":"m","prompt":"', eos=False))
        sent = 0
        answer = None
        while sent < 100 << 20 and answer is None:
            for _ in range(64):
                s.send(envoy.req_body(chunk, eos=False))
            sent += 64 * len(chunk)
            answer = s.recv(timeout=0.05)
        if answer is None:
            answer = s.recv(timeout=10)
        peak = rss_kib(k.proc.pid) - before
        s.close()
        check(answer is not None, "no answer to an oversized body")
        eq(envoy.immediate(answer), (400, "inference error: BadRequest - request body exceeds "
                                          "%d bytes" % limit))
        check(sent < 100 << 20, "refused before the whole 100 MB was sent (sent %d)" % sent)
        check(envoy.SANITIZED or peak < 3 * limit // 1024,
              "RSS grew %d KiB for an 8 MiB limit" % peak)
        served(k)
