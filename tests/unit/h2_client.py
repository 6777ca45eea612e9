"""Independent gRPC client for tests/unit/test_h2.c (gRPC C-core via grpcio).

Run with Debian's /usr/bin/python3 (it has python3-grpcio). Every command
prints what it saw, one "key=value" per line; test_h2.c asserts on that, so
this script judges nothing itself. Raw bytes only: identity serializers, and
the tiny grpc.health.v1 messages are hand-encoded.

usage: h2_client.py [--tls-fetch | --tls-ca FILE] PORT COMMAND [ARGS...]
"""
import asyncio
import queue
import socket
import ssl
import sys
import time

import grpc
from grpc import aio

BIDI = "/kepp.test.Echo/Bidi"
HEALTH = "/grpc.health.v1.Health/"
TIMEOUT = 20
HOST = "localhost"  # the name the server certificates carry


def ident(b):
    return b


def out(key, value):
    print(f"{key}={value}", flush=True)


def code_name(err):
    return err.code().name


def creds_for(args, port):
    """Channel credentials for --tls-fetch / --tls-ca, else None (h2c)."""
    if args.get("tls_fetch"):
        pem = ssl.get_server_certificate(("127.0.0.1", port)).encode()
        return grpc.ssl_channel_credentials(root_certificates=pem)
    if args.get("tls_ca"):
        with open(args["tls_ca"], "rb") as f:
            return grpc.ssl_channel_credentials(root_certificates=f.read())
    return None


def channel(args, port):
    target = f"127.0.0.1:{port}"
    creds = creds_for(args, port)
    if creds is None:
        return grpc.insecure_channel(target)
    return grpc.secure_channel(
        target, creds, options=[("grpc.ssl_target_name_override", HOST)])


def bidi(ch):
    return ch.stream_stream(BIDI, request_serializer=ident, response_deserializer=ident)


def unary(ch, path):
    return ch.unary_unary(path, request_serializer=ident, response_deserializer=ident)


class Sender:
    """A request iterator fed from this thread while the call runs."""

    def __init__(self):
        self.q = queue.Queue()

    def send(self, m):
        self.q.put(m)

    def close(self):
        self.q.put(None)

    def __iter__(self):
        while True:
            m = self.q.get()
            if m is None:
                return
            yield m


def cmd_echo(args, port, n):
    n = int(n)
    msgs = [bytes([i % 251]) * ((i * 37) % 5000) for i in range(n)]
    with channel(args, port) as ch:
        try:
            got = list(bidi(ch)(iter(msgs), timeout=TIMEOUT))
            out("code", "OK")
        except grpc.RpcError as e:
            got = []
            out("code", code_name(e))
        out("count", len(got))
        out("equal", got == msgs)


def cmd_concurrent(args, port, k):
    k = int(k)

    # No deadline on these calls: on a loaded machine 200 streams in one
    # Python process may take long, and a deadline would turn slowness into
    # a failure. test_h2.c's `timeout` wrapper still ends a hang.
    async def one(ch, i, barrier):
        call = ch.stream_stream(BIDI, request_serializer=ident,
                                response_deserializer=ident)()
        first = f"first-{i}".encode()
        try:
            await call.write(first)
            ok = await call.read() == first
        finally:
            # Every stream is open at once before any of them ends; a failed
            # one still counts, so the others do not wait for it forever.
            barrier["arrived"] += 1
            if barrier["arrived"] == k:
                barrier["all"].set()
        await barrier["all"].wait()
        second = f"second-{i}".encode()
        await call.write(second)
        ok = ok and await call.read() == second
        await call.done_writing()
        code = await call.code()
        return ok and code == grpc.StatusCode.OK

    async def run():
        async with aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            barrier = {"arrived": 0, "all": asyncio.Event()}
            res = await asyncio.gather(*[one(ch, i, barrier) for i in range(k)],
                                       return_exceptions=True)
            out("ok", sum(1 for r in res if r is True))

    asyncio.run(run())


def cmd_big(args, port, size):
    size = int(size)
    msg = bytes(i % 256 for i in range(size))
    with channel(args, port) as ch:
        try:
            got = unary(ch, BIDI)(msg, timeout=TIMEOUT)
            out("code", "OK")
            out("equal", got == msg)
        except grpc.RpcError as e:
            out("code", code_name(e))
            out("details", e.details())


def cmd_unary(args, port, path, payload):
    with channel(args, port) as ch:
        try:
            got = unary(ch, path)(payload.encode(), timeout=TIMEOUT)
            out("code", "OK")
            out("reply", got.decode(errors="replace"))
        except grpc.RpcError as e:
            out("code", code_name(e))
            out("details", e.details())


def cmd_stream(args, port, *msgs):
    """Sends each argument as a message, then half-closes."""
    with channel(args, port) as ch:
        call = bidi(ch)(iter([m.encode() for m in msgs]), timeout=TIMEOUT)
        got = []
        try:
            for r in call:
                got.append(r.decode(errors="replace"))
            out("code", "OK")
        except grpc.RpcError as e:
            out("code", code_name(e))
        out("replies", ",".join(got))
        out("details", call.details())


def cmd_backpressure(args, port, count, size):
    """Sends |count| messages without reading the echoes for a while: the
    server stops granting window once its queued output is high, so the
    client can hand over only part of them; then everything is read."""
    count, size = int(count), int(size)
    taken = [0]

    def feed():
        for i in range(count):
            taken[0] = i + 1
            yield bytes([i % 256]) * size

    with channel(args, port) as ch:
        call = bidi(ch)(feed(), timeout=TIMEOUT * 2)
        time.sleep(2)
        out("taken_before_read", taken[0])
        ok, n = True, 0
        try:
            for r in call:
                ok = ok and r == bytes([n % 256]) * size
                n += 1
            out("code", "OK")
        except grpc.RpcError as e:
            out("code", code_name(e))
        out("echoed", n)
        out("equal", ok)


def cmd_connections(args, port, conns, calls):
    """|conns| channels at once, each with |calls| unary calls in parallel."""
    import threading
    conns, calls = int(conns), int(calls)
    good = [0]
    lock = threading.Lock()

    def worker(c):
        with channel(args, port) as ch:
            fn = unary(ch, BIDI)
            futs = [fn.future(f"{c}-{i}".encode(), timeout=TIMEOUT) for i in range(calls)]
            for i, f in enumerate(futs):
                try:
                    if f.result() == f"{c}-{i}".encode():
                        with lock:
                            good[0] += 1
                except grpc.RpcError:
                    pass

    ts = [threading.Thread(target=worker, args=(c,)) for c in range(conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out("ok", good[0])


def cmd_compressed(args, port):
    with channel(args, port) as ch:
        try:
            unary(ch, BIDI)(b"x" * 1000, timeout=TIMEOUT, compression=grpc.Compression.Gzip)
            out("code", "OK")
        except grpc.RpcError as e:
            out("code", code_name(e))
            out("details", e.details())


def cmd_cancel(args, port):
    with channel(args, port) as ch:
        s = Sender()
        call = bidi(ch)(iter(s), timeout=TIMEOUT)
        s.send(b"hello")
        out("echo", next(call) == b"hello")
        call.cancel()
        out("code", call.code().name)


def pb_string(field, s):
    b = s.encode()
    return bytes([field << 3 | 2, len(b)]) + b


def pb_fields(buf):
    """(field, value) pairs of a protobuf message: varints and bytes only."""
    i, res = 0, []
    while i < len(buf):
        key, i = pb_varint(buf, i)
        if key & 7 == 0:
            v, i = pb_varint(buf, i)
        elif key & 7 == 2:
            n, i = pb_varint(buf, i)
            v, i = buf[i:i + n], i + n
        else:
            raise ValueError("unexpected wire type")
        res.append((key >> 3, v))
    return res


def pb_varint(buf, i):
    v, shift = 0, 0
    while True:
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, i


def status_of(resp):
    return dict(pb_fields(resp)).get(1, 0)


def cmd_health(args, port, *services):
    """Check each service, then List, then Watch."""
    with channel(args, port) as ch:
        check = unary(ch, HEALTH + "Check")
        for svc in services:
            try:
                out(f"check[{svc}]", status_of(check(pb_string(1, svc), timeout=TIMEOUT)))
            except grpc.RpcError as e:
                out(f"check[{svc}]", code_name(e))
        try:
            resp = unary(ch, HEALTH + "List")(b"", timeout=TIMEOUT)
            entries = {}
            for field, entry in pb_fields(resp):
                kv = dict(pb_fields(entry))
                entries[kv[1].decode()] = status_of(kv.get(2, b""))
            out("list", ",".join(f"{k}:{v}" for k, v in sorted(entries.items())))
        except grpc.RpcError as e:
            out("list", code_name(e))
        watch = ch.unary_stream(HEALTH + "Watch", request_serializer=ident,
                                response_deserializer=ident)
        try:
            list(watch(pb_string(1, ""), timeout=TIMEOUT))
            out("watch", "OK")
        except grpc.RpcError as e:
            out("watch", code_name(e))
            out("watch_details", e.details())


def cmd_certis(args, port, path):
    """Whether the server presents the certificate in |path|."""
    pem = ssl.get_server_certificate(("127.0.0.1", port))
    with open(path) as f:
        want = ssl.PEM_cert_to_DER_cert(f.read())
    out("same", ssl.PEM_cert_to_DER_cert(pem) == want)


def cmd_alpn(args, port):
    for protos in (["http/1.1"], ["h2", "http/1.1"]):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(protos)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw:
                with ctx.wrap_socket(raw) as s:
                    out(protos[0], s.selected_alpn_protocol())
        except (ssl.SSLError, OSError):
            out(protos[0], "refused")


def refused(port):
    """Whether a connect is refused. A connect that raced the listener's
    close (queued, then reset) says nothing yet: the caller asks again."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except ConnectionRefusedError:
        return True
    except (ConnectionResetError, socket.timeout):
        return False


def cmd_drain(args, port):
    """An in-flight stream outlives the drain; new work is refused."""
    with channel(args, port) as ch:
        s = Sender()
        call = bidi(ch)(iter(s), timeout=TIMEOUT)
        s.send(b"before")
        ok = next(call) == b"before"
        out("ready", ok)
        deadline = time.time() + TIMEOUT
        while not refused(port) and time.time() < deadline:
            time.sleep(0.05)
        out("listener_closed", refused(port))
        # A little time for the GOAWAY pair to arrive on this connection.
        time.sleep(0.3)
        s.send(b"after")
        ok = next(call) == b"after"
        s.close()
        try:
            for _ in call:
                ok = False
        except grpc.RpcError:
            ok = False
        out("inflight", f"{ok}:{call.code().name}")
        try:
            unary(ch, BIDI)(b"new", timeout=3)
            out("same_channel", "OK")
        except grpc.RpcError as e:
            out("same_channel", code_name(e))
    with channel(args, port) as ch:
        try:
            unary(ch, BIDI)(b"new", timeout=3)
            out("new_channel", "OK")
        except grpc.RpcError as e:
            out("new_channel", code_name(e))


def main(argv):
    args = {}
    while argv and argv[0].startswith("--"):
        opt = argv.pop(0)
        if opt == "--tls-fetch":
            args["tls_fetch"] = True
        elif opt == "--tls-ca":
            args["tls_ca"] = argv.pop(0)
        else:
            raise SystemExit(f"unknown option {opt}")
    port, cmd, rest = int(argv[0]), argv[1], argv[2:]
    globals()["cmd_" + cmd](args, port, *rest)


if __name__ == "__main__":
    main(sys.argv[1:])
