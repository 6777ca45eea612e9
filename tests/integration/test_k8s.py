"""kepp on Kubernetes: the pool, its pods, objectives and rewrites read from a
fake API server that speaks the real list/watch protocol
(tests/k8s/fake_apiserver.py), watches that drop, stall or expire, RBAC and
missing CRDs, token rotation, and Lease-based leader election."""
import json
import os
import sys
import time

import envoy
from envoy import (CONFORMANCE_CONFIG, NOT_SERVING, SERVING, TestFailure, check, eq,
                   health_check, kind, llm_request, set_headers)
from test_extproc import conf_request, route

sys.path.insert(0, os.path.join(envoy.ROOT, "tests", "k8s"))
import fake_apiserver as fa  # noqa: E402

POOL = "pool"
SEL = {"app": "vllm"}


def api_fixture(**kw):
    return lambda: fa.FakeAPIServer(**kw)


FIXTURES = {"api": api_fixture(bookmark_interval=1.0)}


def kepp_on(api, pool_name=POOL, extra=(), config_text=CONFORMANCE_CONFIG, kubeconfig=None, **kw):
    """A kepp reading its pool from |api| (not started)."""
    kc = kubeconfig or api.kubeconfig(os.path.join(api.tmp, "kubeconfig"))
    return envoy.Kepp(endpoints=None, pool_name=pool_name, config_text=config_text,
                      extra=["--kubeconfig", kc] + list(extra), **kw)


def dest(k, selection):
    """Where kepp routes a request restricted to |selection| (the conformance
    test filter), or None when it refuses it (no such endpoint)."""
    s = k.stream()
    s.send(*conf_request(selection))
    r = s.recv_n(1, 10)[0]
    if kind(r) == "immediate_response":
        s.close()
        return None
    hdr = set_headers(r)[envoy.DEST]
    s.close()
    return hdr


def until(what, fn, timeout=5.0, every=0.02):
    """Polls fn() until true; returns the seconds it took."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if fn():
            return time.time() - t0
        time.sleep(every)
    raise TestFailure("timed out after %.1fs waiting for %s" % (timeout, what))


def serving(k, service=""):
    return health_check(k.health_port, service) == SERVING


def pods(api, n, labels=SEL, base="127.0.2.", **kw):
    return [api.create(fa.pod("p%d" % i, "%s%d" % (base, i + 1), labels, **kw)) for i in range(n)]


def set_ready(api, p, ready):
    def fn(o):
        for c in o["status"]["conditions"]:
            if c["type"] in ("Ready", "ContainersReady"):
                c["status"] = "True" if ready else "False"
    return api.patch(p, fn)


def log_has(k, *words):
    return any(all(w in json.dumps(line) for w in words) for line in k.logs())


# ---- the pool and its pods ----------------------------------------------------

def test_pool_and_pods_from_the_api(api):
    with kepp_on(api) as k:
        time.sleep(0.3)
        eq(health_check(k.health_port, "inference-extension"), NOT_SERVING, "health before the pool exists")
        api.create(fa.pool_v1(POOL, SEL, [8000, 8001]))
        pods(api, 2)
        api.create(fa.pod("other", "127.0.2.9", {"app": "other"}))
        api.create(fa.pod("p-half", "127.0.2.5", SEL,
                          annotations={"inference.networking.k8s.io/active-ports": "8001, 9999"}))
        until("SERVING", lambda: serving(k, "inference-extension"))
        eq(dest(k, "127.0.2.1:8000"), "127.0.2.1:8000")
        eq(dest(k, "127.0.2.2:8001"), "127.0.2.2:8001", "second target port is an endpoint")
        eq(dest(k, "127.0.2.9"), None, "a pod outside the selector")
        eq(dest(k, "127.0.2.5:8000"), None, "a port the active-ports annotation leaves out")
        eq(dest(k, "127.0.2.5:8001"), "127.0.2.5:8001", "the active port")


def test_pods_ready_and_gone_change_picks_within_a_second(api):
    api.create(fa.pool_v1(POOL, SEL, [8000]))
    p0, p1, p2 = pods(api, 3)
    with kepp_on(api) as k:
        until("SERVING", lambda: serving(k))
        eq(dest(k, "127.0.2.1"), "127.0.2.1:8000")
        set_ready(api, p0, False)
        dt = until("p0 leaves", lambda: dest(k, "127.0.2.1") is None)
        check(dt < 1.0, "unready pod still picked after %.2fs" % dt)
        set_ready(api, p0, True)
        dt = until("p0 back", lambda: dest(k, "127.0.2.1") == "127.0.2.1:8000")
        check(dt < 1.0, "ready pod not picked after %.2fs" % dt)
        api.delete(p1)
        dt = until("p1 deleted", lambda: dest(k, "127.0.2.2") is None)
        check(dt < 1.0, "deleted pod still picked after %.2fs" % dt)
        api.patch(p2, lambda o: o["metadata"].update(deletionTimestamp=fa.now_rfc3339()))
        dt = until("p2 terminating", lambda: dest(k, "127.0.2.3") is None)
        check(dt < 1.0, "terminating pod still picked after %.2fs" % dt)
        api.create(fa.pod("p9", "127.0.2.99", SEL))
        dt = until("new pod", lambda: dest(k, "127.0.2.99") == "127.0.2.99:8000")
        check(dt < 1.0, "new pod not picked after %.2fs" % dt)


def test_selector_and_port_changes_retarget(api):
    pool = api.create(fa.pool_v1(POOL, SEL, [8000]))
    pods(api, 1)
    api.create(fa.pod("b0", "127.0.3.1", {"app": "b"}))
    with kepp_on(api) as k:
        until("p0", lambda: dest(k, "127.0.2.1") == "127.0.2.1:8000")
        eq(dest(k, "127.0.3.1"), None)
        api.patch(pool, lambda o: o["spec"].update(selector={"matchLabels": {"app": "b"}}))
        until("b0 after the selector change", lambda: dest(k, "127.0.3.1") == "127.0.3.1:8000")
        eq(dest(k, "127.0.2.1"), None, "old selector's pod")
        api.patch(pool, lambda o: o["spec"].update(targetPorts=[{"number": 9000}]))
        until("port change", lambda: dest(k, "127.0.3.1") == "127.0.3.1:9000")


def test_pool_deleted_clears_and_comes_back(api):
    pool = api.create(fa.pool_v1(POOL, SEL, [8000]))
    pods(api, 1)
    with kepp_on(api) as k:
        until("SERVING", lambda: serving(k))
        api.delete(pool)
        until("NOT_SERVING", lambda: not serving(k))
        eq(dest(k, "127.0.2.1"), None, "no endpoints without the pool")
        api.create(fa.pool_v1(POOL, SEL, [8000]))
        until("SERVING again", lambda: serving(k) and dest(k, "127.0.2.1") == "127.0.2.1:8000")


def test_v1alpha2_pool(api):
    api.create(fa.pool_v1alpha2(POOL, SEL, 8000))
    pods(api, 1)
    with kepp_on(api, extra=["--pool-group", "inference.networking.x-k8s.io"]) as k:
        until("p0", lambda: dest(k, "127.0.2.1") == "127.0.2.1:8000")


def test_fastpath_annotation_ignored_without_the_kernel(api):
    # The fast path itself is tested in test_fastpath_k8s (root, a netns).
    pool = api.create(fa.pool_v1(POOL, SEL, [8000],
                                 annotations={"kepp.io/fastpath": "10.96.0.50:8000=m"}))
    pods(api, 1)
    with kepp_on(api) as k:  # --kernel=off
        until("SERVING", lambda: serving(k) and dest(k, "127.0.2.1") == "127.0.2.1:8000")
        said = lambda: [l for l in k.logs() if "kepp.io/fastpath annotation ignored" in l["msg"]]
        until("the annotation ignored", lambda: said())
        eq(said()[0].get("reason"), "--kernel=off", "the reason")
        eq(said()[0].get("pool"), "default/" + POOL, "the pool")
        api.patch(pool, lambda o: o["metadata"]["annotations"].update(
            {"kepp.io/fastpath": "10.96.0.50:8000=m,10.96.0.50:8001=n"}))
        api.create(fa.pod("p9", "127.0.2.99", SEL))
        until("the new pod", lambda: dest(k, "127.0.2.99") == "127.0.2.99:8000")
        eq(len(said()), 1, "said once")


# ---- watch faults -------------------------------------------------------------

def test_watch_cut_resumes_without_losing_an_event(api):
    api.create(fa.pool_v1(POOL, SEL, [8000]))
    p0, p1 = pods(api, 2)
    with kepp_on(api) as k:
        until("SERVING", lambda: serving(k) and dest(k, "127.0.2.2") == "127.0.2.2:8000")
        lists = api.count(contains="/pods?limit")
        api.hold_watches()
        api.cut_watches()
        # Changes while kepp has no watch open: it must get them on resume.
        set_ready(api, p1, False)
        api.create(fa.pod("p7", "127.0.2.77", SEL))
        api.release_watches()
        until("the missed events", lambda: dest(k, "127.0.2.2") is None
              and dest(k, "127.0.2.77") == "127.0.2.77:8000")
        eq(api.count(contains="/pods?limit"), lists, "pod lists (a resume, not a re-list)")
        check(api.count(contains="/pods?watch=1") >= 2, "the watch was reopened")


def test_expired_resource_version_relists(api):
    api.create(fa.pool_v1(POOL, SEL, [8000]))
    p0, p1 = pods(api, 2)
    with kepp_on(api, v=3) as k:
        until("SERVING", lambda: serving(k) and dest(k, "127.0.2.1") == "127.0.2.1:8000")
        lists = api.count(contains="/pods?limit")
        api.hold_watches()
        api.cut_watches()
        api.delete(p0)
        api.compact()  # kepp's resourceVersion is now too old: 410 Gone
        api.release_watches()
        until("the change after a re-list", lambda: dest(k, "127.0.2.1") is None)
        check(api.count(contains="/pods?limit") > lists, "no re-list after 410 Gone")
        eq(dest(k, "127.0.2.2"), "127.0.2.2:8000")
        check(log_has(k, "410"), "no log line about the expired version")


def test_chunked_list_and_expired_continue(api):
    api.page_limit = 2
    api.create(fa.pool_v1(POOL, SEL, [8000]))
    pods(api, 5)
    api.expire_next_continue()
    with kepp_on(api) as k:
        for i in range(1, 6):
            until("pod %d" % i, lambda: dest(k, "127.0.2.%d" % i) == "127.0.2.%d:8000" % i)
        check(api.count(contains="continue=") >= 3, "pages were not followed")


def test_stalled_watch_is_reopened(api):
    api.create(fa.pool_v1(POOL, SEL, [8000]))
    p0, = pods(api, 1)
    with kepp_on(api, extra=["--kube-watch-idle-timeout", "1s"]) as k:
        until("SERVING", lambda: serving(k))
        api.stall_watches()
        set_ready(api, p0, False)
        dt = until("the change through a new watch", lambda: dest(k, "127.0.2.1") is None, timeout=6)
        check(dt < 4.0, "stalled watch noticed after %.1fs" % dt)


# ---- RBAC, missing CRDs, credentials ----------------------------------------------

def test_forbidden_and_missing_crd_are_logged_and_retried(api):
    api.create(fa.pool_v1(POOL, SEL, [8000]))
    pods(api, 1)
    api.forbid("pods")
    api.uninstall(("inference.networking.x-k8s.io", "v1alpha2", "inferenceobjectives"))
    with kepp_on(api) as k:
        until("the RBAC log line", lambda: log_has(k, "forbidden", "pods", "list", "watch"))
        until("the CRD log line", lambda: log_has(k, "inferenceobjectives", "CRD"))
        eq(health_check(k.health_port, "inference-extension"), NOT_SERVING, "without pods")
        check(k.alive(), "kepp exited")
        api.allow("pods")
        until("SERVING once allowed", lambda: serving(k) and dest(k, "127.0.2.1") == "127.0.2.1:8000",
              timeout=10)


def test_rotated_token_is_read_again(api):
    api.create(fa.pool_v1(POOL, SEL, [8000]))
    p0, = pods(api, 1)
    tok = os.path.join(api.tmp, "token")
    with open(tok, "w") as f:
        f.write("token-one\n")
    api.set_tokens("token-one")
    kc = api.kubeconfig(os.path.join(api.tmp, "kubeconfig-rotating"), token_file=tok)
    with kepp_on(api, kubeconfig=kc) as k:
        until("SERVING", lambda: serving(k))
        with open(tok + ".new", "w") as f:
            f.write("token-two\n")
        os.rename(tok + ".new", tok)  # as the kubelet swaps projected tokens
        api.set_tokens("token-two")
        api.cut_watches()
        set_ready(api, p0, False)
        until("the change with the new token", lambda: dest(k, "127.0.2.1") is None)


def test_bad_credentials_do_not_crash(api):
    api.create(fa.pool_v1(POOL, SEL, [8000]))
    pods(api, 1)
    api.set_tokens("something-else")
    with kepp_on(api) as k:
        until("the 401 log line", lambda: log_has(k, "401"))
        check(k.alive() and not serving(k), "kepp must keep running, NOT_SERVING")


# ---- objectives, rewrites -----------------------------------------------------------

def test_rewrites_apply_and_follow_changes(api):
    api.create(fa.pool_v1(POOL, SEL, [8000]))
    pods(api, 1)
    rw = api.create(fa.rewrite("rw", POOL, [(["m"], [("m-v2", 1)])]))
    api.create(fa.rewrite("other-pool", "another-pool", [(["m"], [("wrong", 1)])]))
    with kepp_on(api, config_text=None) as k:
        until("SERVING", lambda: serving(k))

        def model():
            s = k.stream()
            s.send(*llm_request("m"))
            hdr, body, _ = route(s)
            s.close()
            return json.loads(body)["model"]
        until("the rewrite", lambda: model() == "m-v2")
        api.patch(rw, lambda o: o["spec"]["rules"][0]["targets"][0].update(modelRewrite="m-v3"))
        until("the changed rewrite", lambda: model() == "m-v3")
        api.delete(rw)
        until("no rewrite", lambda: model() == "m")


def test_objectives_apply_and_follow_changes(api):
    from test_picks import load, pick, wait_queue
    from test_sim import Sim
    with Sim(instances=1, extra=["--max-num-seqs", "1", "--decode-ms", "20"]) as sim:
        api.create(fa.pool_v1(POOL, SEL, [sim.port]))
        api.create(fa.pod("sim0", sim.addrs[0], SEL))
        batch = api.create(fa.objective("batch", -1, POOL))
        ep = "%s:%d" % (sim.addrs[0], sim.port)
        with kepp_on(api, config_text=None) as k:
            until("SERVING", lambda: serving(k))
            time.sleep(0.3)
            eq(pick(k, objective_name="batch"), ep, "idle pool admits priority -1")
            threads = load(sim, sim.addrs[0], 10, 30)
            wait_queue(sim, sim.addrs[0], 6)
            time.sleep(0.3)
            eq(pick(k, objective_name="batch")[0], 429, "saturated pool sheds the objective's priority -1")
            api.patch(batch, lambda o: o["spec"].update(priority=5))
            until("priority 5 from the API", lambda: pick(k, objective_name="batch") == ep, timeout=3)
            for t in threads:
                t.join(20)


# ---- standalone ---------------------------------------------------------------------

def test_standalone_endpoint_selector(api):
    pods(api, 2)
    api.create(fa.pod("x", "127.0.2.50", {"app": "x"}))
    with kepp_on(api, pool_name="", extra=["--endpoint-selector", "app=vllm",
                                            "--endpoint-target-ports", "8000,8001"]) as k:
        until("SERVING", lambda: serving(k))
        eq(dest(k, "127.0.2.1:8001"), "127.0.2.1:8001")
        eq(dest(k, "127.0.2.50"), None)
        eq(api.count(contains="inference"), 0, "no CRD requests in standalone mode")


# ---- leader election --------------------------------------------------------------

LE = ["--ha-enable-leader-election", "--ha-lease-duration", "2s", "--ha-renew-deadline", "1500ms",
      "--ha-retry-period", "200ms"]
LEASE = ("coordination.k8s.io", "v1", "leases")
LEASE_NAME = "epp-default-%s.gateway-api-inference-extension.sigs.k8s.io" % POOL


def ready(k):
    return health_check(k.health_port, "readiness") == SERVING


def test_two_replicas_elect_one_leader_and_fail_over(api):
    api.create(fa.pool_v1(POOL, SEL, [8000]))
    pods(api, 1)
    a, b = kepp_on(api, extra=LE), kepp_on(api, extra=LE)
    with a, b:
        until("a leader", lambda: ready(a) or ready(b))
        time.sleep(1.0)
        check(ready(a) != ready(b), "exactly one replica is ready (a=%s b=%s)" % (ready(a), ready(b)))
        for k in (a, b):
            eq(health_check(k.health_port, "liveness"), SERVING, "liveness on every replica")
        leader, standby = (a, b) if ready(a) else (b, a)
        lease = api.get(LEASE, LEASE_NAME)
        check(lease is not None and lease["spec"]["holderIdentity"], "no Lease %s" % LEASE_NAME)
        leader.kill()  # no release: the standby waits for the Lease to expire
        leader.proc = None  # killed on purpose: not an exit code to check
        dt = until("the standby takes over", lambda: ready(standby), timeout=10)
        check(dt < 5.0, "takeover took %.1fs" % dt)
        eq(dest(standby, "127.0.2.1"), "127.0.2.1:8000", "the new leader routes")
        check(api.get(LEASE, LEASE_NAME)["spec"]["holderIdentity"] != lease["spec"]["holderIdentity"],
              "the Lease changed hands")


def test_leader_releases_the_lease_on_shutdown(api):
    api.create(fa.pool_v1(POOL, SEL, [8000]))
    slow = LE[:1] + ["--ha-lease-duration", "30s", "--ha-renew-deadline", "20s",
                     "--ha-retry-period", "200ms"]
    a, b = kepp_on(api, extra=slow), kepp_on(api, extra=slow)
    with a:
        until("a leads", lambda: ready(a))
        with b:
            time.sleep(0.5)
            check(not ready(b), "b must stand by")
            a.stop()
            dt = until("b takes the released Lease", lambda: ready(b), timeout=10)
            check(dt < 3.0, "takeover after a release took %.1fs (not the 30s lease)" % dt)


def test_lost_renewal_steps_down_without_restart(api):
    api.create(fa.pool_v1(POOL, SEL, [8000]))
    with kepp_on(api, extra=LE) as k:
        until("leader", lambda: ready(k))
        api.forbid("leases", verbs=("get", "update", "create"))
        until("steps down", lambda: not ready(k), timeout=5)
        check(k.alive(), "kepp exited on losing leadership")
        api.allow("leases")
        until("leads again", lambda: ready(k), timeout=8)


# ---- deploy/ -------------------------------------------------------------------------

DEPLOY = os.path.join(envoy.ROOT, "deploy")


def deploy_docs():
    import yaml
    docs = []
    for name in sorted(os.listdir(DEPLOY)):
        if name.endswith((".yaml", ".yml")):
            with open(os.path.join(DEPLOY, name)) as f:
                for d in yaml.safe_load_all(f):
                    if d is not None:
                        docs.append((name, d))
    return docs


def test_deploy_manifests_parse_and_name_real_flags():
    docs = deploy_docs()
    kinds = {d["kind"] for _, d in docs}
    for want in ("ServiceAccount", "ClusterRole", "Role", "RoleBinding", "Service", "Deployment",
                 "DaemonSet"):
        check(want in kinds, "deploy/ has no %s" % want)
    for name, d in docs:
        check(d.get("apiVersion") and d.get("kind") and d.get("metadata", {}).get("name"),
              "%s: a document without apiVersion, kind or metadata.name" % name)
    helptext = envoy.subprocess.run([os.path.join(envoy.BUILD_DIR, "kepp"), "--help"],
                                    capture_output=True, text=True).stdout
    for name, d in docs:
        if d["kind"] not in ("Deployment", "DaemonSet"):
            continue
        spec = d["spec"]["template"]["spec"]
        eq(spec["serviceAccountName"], "kepp", name + " service account")
        for c in spec["containers"]:
            for a in c["args"]:
                flag = a.split("=", 1)[0]
                check(flag.startswith("--") and ("--%-32s" % flag[2:]) in helptext,
                      "%s: kepp has no flag %s" % (name, flag))
            eq(sorted(p["containerPort"] for p in c["ports"]), [9002, 9003, 9090],
               name + " container ports")
            for probe in ("livenessProbe", "readinessProbe"):
                eq(c[probe]["grpc"]["port"], 9003, "%s %s" % (name, probe))
    svc = [d for _, d in docs if d["kind"] == "Service"][0]
    ports = {p["port"]: p for p in svc["spec"]["ports"]}
    eq(sorted(ports), [9002, 9003, 9090], "Service ports")
    eq(ports[9002].get("appProtocol"), "http2", "appProtocol of the ext_proc port")
    ds = [d for _, d in docs if d["kind"] == "DaemonSet"][0]
    spec = ds["spec"]["template"]["spec"]
    eq(spec.get("hostNetwork"), True, "DaemonSet hostNetwork")
    check(spec.get("nodeSelector"), "DaemonSet runs on GPU nodes only (nodeSelector)")
    sc = spec["containers"][0]["securityContext"]
    # Exactly the capabilities tests/integration/test_caps.py runs the fast path with.
    eq(sorted(sc["capabilities"]["add"]), ["BPF", "NET_ADMIN", "PERFMON"], "DaemonSet capabilities")
    check(not sc.get("privileged"), "the DaemonSet is not privileged")
    mounts = {m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    check("/sys/fs/bpf" in mounts, "DaemonSet mounts %s" % mounts)


def test_rbac_is_exactly_what_kepp_uses(api):
    """rbac.yaml's ClusterRole is enough without leader election, and with
    rbac-leader-election.yaml's Role enough with it; kepp uses every rule."""
    docs = deploy_docs()
    role = [d for _, d in docs if d["kind"] == "ClusterRole"][0]
    le = [d for n, d in docs if d["kind"] == "Role" and n == "rbac-leader-election.yaml"][0]
    eq({r for rule in le["rules"] for r in rule["resources"]}, {"leases"},
       "the leader-election Role holds Lease rules only")
    granted = {(g, r, v) for rule in role["rules"] + le["rules"] for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}
    api.create(fa.pool_v1(POOL, SEL, [8000]))
    api.create(fa.pool_v1alpha2("legacy", SEL, 8000))
    pods(api, 1)
    api.enforce_rbac(role["rules"] + le["rules"])
    with kepp_on(api, extra=LE) as k:
        until("ready", lambda: ready(k) and dest(k, "127.0.2.1") == "127.0.2.1:8000")
    api.enforce_rbac(role["rules"])
    with kepp_on(api, pool_name="legacy", extra=["--pool-group", "inference.networking.x-k8s.io"]) as k:
        until("legacy pool", lambda: dest(k, "127.0.2.1") == "127.0.2.1:8000")
    eq(api.denied, [], "requests the Roles forbid")
    eq(sorted(granted - api.used), [], "granted but never used")
