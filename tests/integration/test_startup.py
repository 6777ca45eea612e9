"""Start-up and reload behaviour: bad flags, configs and manifests are refused
with file, line and reason; manifests are reloaded when they change, and a
bad change keeps the previous manifests in force."""
import os
import subprocess
import tempfile
import time

import envoy
from envoy import TestFailure, check, eq, llm_request, set_headers
from test_extproc import HERMETIC, POOL_V1, route

KEPP = os.path.join(envoy.BUILD_DIR, "kepp")


def run_kepp(*args, timeout=20):
    """Runs kepp expecting it to refuse to start; returns (exit code, stderr)."""
    p = subprocess.run([KEPP, "--secure-serving=false", "--kernel=off",
                        "--grpc-port", str(envoy.free_port()),
                        "--grpc-health-port", str(envoy.free_port())] + list(args),
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
