"""The kernel fast path with only the capabilities the DaemonSet grants:
CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON load, attach, steer and, on a clean
exit without --kernel-keep, detach and unpin it all (CAP_SYS_ADMIN
is needed only to mount a missing bpffs); with less, --kernel=auto serves
ext_proc alone and says why once, and --kernel=on refuses to start.

Runs kepp under setpriv with a reduced bounding set: as root, a process's
capabilities after exec are its bounding set. Root and BPF are required
(test_kernel.require_privileges fails under CI=true when they are missing)."""
import subprocess

from envoy import check, eq
import test_kernel as tk

DAEMONSET_CAPS = ["bpf", "net_admin", "perfmon"]


def capped(caps, args):
    return ["setpriv", "--bounding-set", "-all" + "".join(",+" + c for c in caps),
            "--inh-caps", "-all", "--"] + args


def kepp_with(env, caps, extra=()):
    k = tk.KernelKepp(env, extra)
    k.args = capped(caps, k.args)
    env.kepps.append(k)
    return k


def test_fast_path_with_the_daemonset_capabilities():
    with tk.Env() as env:
        env.backends(tk.LOADS)
        k = kepp_with(env, DAEMONSET_CAPS)
        k.start()
        tk.wait_scored(env)
        for c in env.client(n=3):
            eq(c["answer"], "%s:%d" % (tk.BEST, tk.BE_PORT), "steered with the reduced set")
        # The same set is enough to take it all down again on a clean exit.
        k.stop()
        check("kernel fast path removed" in k.text(), k.text())
        eq(tk.cgroup_progs(env), [], "nothing left on the cgroup")
        eq(tk.netns_links(env), [], "no sk_lookup link left")
        eq(tk.pins(env), None, "no pins left")


def test_without_bpf_capabilities_auto_serves_on_and_on_refuses():
    with tk.Env() as env:
        env.backends(tk.LOADS)
        # --kernel=on: exit 2 with the reason.
        k = kepp_with(env, ["net_admin"])
        f = open(k.log, "wb")
        p = env.spawn(k.args, stdout=subprocess.DEVNULL, stderr=f)
        rc = p.wait(timeout=20)
        f.close()
        eq(rc, 2, "exit code of --kernel=on without CAP_BPF:\n" + k.text())
        check("cannot load the kernel fast path" in k.text(), k.text())
        # --kernel=auto: ext_proc serves, one line says why the fast path is off.
        a = kepp_with(env, ["net_admin"], extra=["--kernel=auto"])
        a.args = [x for x in a.args if x != "--kernel=on"]
        f = open(a.log, "wb")
        a._f = f
        a.proc = env.spawn(a.args, stdout=subprocess.DEVNULL, stderr=f)
        a.wait_log("kepp serving", 15)
        said = [l for l in a.text().splitlines()
                if "kernel fast path not loaded; serving ext_proc only" in l]
        eq(len(said), 1, "auto says once why the fast path is off:\n" + a.text())
        check('"reason":"load kepp_sock: Operation not permitted"' in said[0], said[0])
        check(a.proc.poll() is None, "kepp --kernel=auto kept running")
        a.stop()
