"""Start-up and reload behaviour: bad flags, configs and manifests are refused
with file, line and reason; manifests are reloaded when they change, and a
bad change keeps the previous manifests in force."""
import os
import subprocess
import tempfile
import time
import urllib.request

import envoy
from envoy import TestFailure, check, eq, llm_request, set_headers
from test_extproc import CONF_EPS, HERMETIC, POOL_V1, conf_request, route

KEPP = os.path.join(envoy.BUILD_DIR, "kepp")


def run_kepp(*args, timeout=20):
    """Runs kepp expecting it to refuse to start; returns (exit code, stderr)."""
    p = subprocess.run([KEPP, "--secure-serving=false", "--kernel=off",
                        "--grpc-port", str(envoy.free_port()),
                        "--grpc-health-port", str(envoy.free_port()),
                        "--metrics-port", str(envoy.free_port())] + list(args),
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    return p.returncode, p.stderr.decode("utf-8", "replace")


def test_unknown_flag_refused():
    rc, err = run_kepp("--endpoints", "127.0.0.1:8000", "--no-such-flag")
    eq(rc, 2, "exit code")
    check("unknown flag --no-such-flag" in err, err)


def test_bad_flag_value_refused():
    rc, err = run_kepp("--endpoints", "127.0.0.1:8000", "--drain-timeout", "soon")
    eq(rc, 2, "exit code")
    check('invalid value "soon" for flag --drain-timeout' in err, err)


def test_kernel_on_without_fast_path_refused():
    rc, err = run_kepp("--endpoints", "127.0.0.1:8000", "--kernel=on")
    eq(rc, 2, "exit code")
    check("--kernel=on" in err, err)


def test_bad_endpoints_refused():
    rc, err = run_kepp("--endpoints", "127.0.0.1:8000,not-an-address:x")
    eq(rc, 2, "exit code")
    check("not-an-address" in err, err)


def test_bad_config_refused_with_file_and_line():
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "epc.yaml")
        with open(path, "w") as f:
            f.write("apiVersion: inference.networking.x-k8s.io/v1alpha1\n"
                    "kind: EndpointPickerConfig\n"
                    "plugins:\n"
                    "- type: queue-scorer\n"
                    "- type: no-such-scorer\n")
        rc, err = run_kepp("--endpoints", "127.0.0.1:8000", "--config-file", path)
        eq(rc, 2, "exit code")
        check("%s:5: " % path in err and "no-such-scorer" in err, err)
        with open(path, "w") as f:
            f.write("apiVersion: inference.networking.x-k8s.io/v1alpha1\n"
                    "kind: EndpointPickerConfig\n"
                    "plugins:\n"
                    "- type: queue-scorer\n"
                    "  weigth: 2\n")
        rc, err = run_kepp("--endpoints", "127.0.0.1:8000", "--config-file", path)
        eq(rc, 2, "exit code")
        check("%s:5: " % path in err and "weigth" in err, err)


def test_bad_manifest_refused_with_file_and_line():
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "pool.yaml")
        with open(path, "w") as f:
            f.write(POOL_V1.replace("  - number: 8000\n", "  - number: 70000\n"))
        rc, err = run_kepp("--endpoints", "127.0.0.1:8000", "--manifests", path,
                           "--pool-name", envoy.POOL)
        eq(rc, 2, "exit code")
        line = POOL_V1.splitlines().index("  - number: 8000") + 1
        check("%s:%d: " % (path, line) in err, err)


def rewrite(target):
    return """\
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceModelRewrite
metadata:
  name: reload-test
  namespace: default
spec:
  poolRef:
    name: vllm-qwen3-32b-pool
  rules:
  - matches:
    - model:
        value: base
    targets:
    - modelRewrite: %s
      weight: 1
""" % target


def forwarded_model(k):
    s = k.stream()
    s.send(*llm_request("base"))
    _, body, _ = route(s)
    s.close()
    return envoy.json.loads(body)["model"]


def test_manifests_reload_on_change():
    with envoy.Kepp(manifests=HERMETIC + rewrite("first-target")) as k:
        eq(forwarded_model(k), "first-target")
        path = [a for a in k.args if a.endswith("manifests.yaml")][0]
        with open(path, "w") as f:
            f.write(HERMETIC + rewrite("second-target"))
        deadline = time.time() + 5
        while forwarded_model(k) != "second-target":
            if time.time() > deadline:
                raise TestFailure("manifest change not picked up:\n" + k.stderr())
            time.sleep(0.2)
        # A broken change is logged with file and line; the previous
        # manifests stay in force.
        with open(path, "w") as f:
            f.write(HERMETIC + rewrite("third-target").replace("weight: 1", "weight: -1"))
        deadline = time.time() + 5
        while not any("keeping the previous" in (l.get("msg") or "") for l in k.logs()):
            if time.time() > deadline:
                raise TestFailure("bad manifest change not reported:\n" + k.stderr())
            time.sleep(0.2)
        err = [l for l in k.logs() if "keeping the previous" in (l.get("msg") or "")][0]
        check(path + ":" in err.get("error", ""), "error names the file: %r" % err)
        eq(forwarded_model(k), "second-target")


QUEUE_CONFIG = """\
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- type: max-score-picker
schedulingProfiles:
- name: queue-profile
  plugins:
  - pluginRef: queue-scorer
  - pluginRef: max-score-picker
"""


def wait_log(k, text, timeout=5):
    deadline = time.time() + timeout
    while True:
        hits = [l for l in k.logs() if text in (l.get("msg") or "")]
        if hits:
            return hits[-1]
        if time.time() > deadline:
            raise TestFailure("no log %r:\n%s" % (text, k.stderr()))
        time.sleep(0.1)


def unselected(k):
    """A conformance request without the selection header: routed by a
    queue profile, refused with 429 by the conformance profile."""
    s = k.stream()
    s.send(*conf_request(None))
    r = s.recv_n(1)[0]
    s.close()
    if envoy.kind(r) == "immediate_response":
        return envoy.immediate(r)
    return "routed"


def test_config_file_reload_on_change():
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "epc.yaml")
        with open(path, "w") as f:
            f.write(QUEUE_CONFIG)
        with envoy.Kepp(endpoints=CONF_EPS, config_file=path) as k:
            eq(unselected(k), "routed")
            # A stream decided by the conformance profile, still open when
            # the config changes back, finishes with that profile.
            with open(path, "w") as f:
                f.write(envoy.CONFORMANCE_CONFIG)
            wait_log(k, "config reloaded")
            eq(unselected(k)[0], 429)
            old = k.stream()
            old.send(*conf_request("127.0.0.2"))
            route(old)
            with open(path, "w") as f:
                f.write(QUEUE_CONFIG + "# changed\n")
            deadline = time.time() + 5
            while unselected(k) != "routed":
                check(time.time() < deadline, "config change not picked up:\n" + k.stderr())
                time.sleep(0.1)
            old.send(envoy.resp_headers([("content-type", "application/json")],
                                        md=envoy.metadata(served="127.0.0.2:8000")))
            r = old.recv_n(1)[0]
            eq(set_headers(r).get("x-conformance-test-served-endpoint"), "127.0.0.2:8000",
               "the old stream's verifier")
            old.close()
            # A broken change is refused with file and line; the queue
            # profile keeps serving.
            with open(path, "w") as f:
                f.write(QUEUE_CONFIG.replace("- type: max-score-picker", "- type: no-such-picker"))
            err = wait_log(k, "config file changed but is invalid")
            check("%s:5: " % path in err.get("error", ""), "error names file and line: %r" % err)
            eq(unselected(k), "routed")


def test_config_file_not_watched_when_disabled():
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "epc.yaml")
        with open(path, "w") as f:
            f.write(QUEUE_CONFIG)
        with envoy.Kepp(endpoints=CONF_EPS, config_file=path,
                        extra=["--watch-config-file=false"]) as k:
            with open(path, "w") as f:
                f.write(envoy.CONFORMANCE_CONFIG)
            time.sleep(2.5)
            eq(unselected(k), "routed")
            check(not any("config reloaded" in (l.get("msg") or "") for l in k.logs()),
                  k.stderr())


def test_port_in_use_refused():
    """SO_REUSEPORT would let a second kepp share the port silently and take
    half the connections: it must refuse to start instead."""
    with envoy.Kepp() as k:
        rc, err = run_kepp("--endpoints", "127.0.0.1:8000", "--grpc-port", str(k.grpc_port))
        eq(rc, 1, "exit code")
        check("port in use" in err and "--grpc-port" in err, err)
        rc, err = run_kepp("--endpoints", "127.0.0.1:8000",
                           "--grpc-health-port", str(k.health_port))
        eq(rc, 1, "exit code")
        check("--grpc-health-port" in err, err)
        # The admin port listens on every address, IPv6 too (an IPv6-only
        # pod has no IPv4 address to bind).
        for host in ("127.0.0.1", "[::1]"):
            with urllib.request.urlopen("http://%s:%d/healthz" % (host, k.metrics_port),
                                        timeout=5) as r:
                eq(r.status, 200, "/healthz on " + host)
        # The admin port too: asked for and not bound is fatal, never a
        # kepp without /metrics.
        rc, err = run_kepp("--endpoints", "127.0.0.1:8000", "--metrics-port", str(k.metrics_port))
        eq(rc, 1, "exit code")
        check("port in use" in err and "--metrics-port" in err and str(k.metrics_port) in err, err)
    rc, err = run_kepp("--endpoints", "127.0.0.1:8000", "--metrics-port", "-1")
    eq(rc, 2, "exit code")
    check("--metrics-port must be 0..65535" in err, err)
    # 0: no admin server, and kepp serves.
    with envoy.Kepp(extra=["--metrics-port", "0"]) as k:
        eq(envoy.health_check(k.health_port, ""), envoy.SERVING, "serving without /metrics")
