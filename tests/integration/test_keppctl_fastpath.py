"""keppctl fastpath reads the maps kepp pinned and shows what kepp
published: kepp --kernel=on in a network namespace, cgroup and private
bpffs (test_kernel.py's Env), then keppctl against that bpffs, compared
with bpftool's dumps of the same maps.

Needs root, like test_kernel.py (fails with the reason otherwise)."""
import json
import os
import subprocess
import time

import envoy
from envoy import TestFailure, check, eq
import test_kernel as tk

KEPPCTL = os.path.join(envoy.BUILD_DIR, "keppctl")

FIXTURES = {"env": tk.fastpath_env}


def keppctl(env, *args, rc=0):
    p = subprocess.run([KEPPCTL, "fastpath", "--bpffs", env.bpffs] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
    out = p.stdout.decode(errors="replace")
    eq(p.returncode, rc, "keppctl exit status; stderr: %s" % p.stderr.decode(errors="replace"))
    return out, p.stderr.decode(errors="replace")


def view(env):
    return json.loads(keppctl(env, "--json")[0])


def be_counts(env):
    """bpftool's kepp_be_v1 by "ip:port"."""
    out = {}
    for e in env.dump("kepp_be_v1"):
        f = e.get("formatted", e)
        port = int.from_bytes(f["key"]["port"].to_bytes(2, "little"), "big")
        out["%s:%d" % (tk.addr_str(f["key"]["ip"]), port)] = f["value"]
    return out


def test_keppctl_shows_the_published_table(env):
    k = env.kepp(["--refresh-metrics-interval", "5s"])
    tk.wait_scored(env)
    # Held connections: in-flight counts and connects to compare.
    p = env.client(n=3, hold=30, wait=False)
    lines = 0
    while lines < 4:
        if not p.stdout.readline():
            raise TestFailure("client died: %s" % p.stderr.read().decode(errors="replace"))
        lines += 1
    v = view(env)
    eq(v["kepp_pid"], k.proc.pid, "the kepp process holding the maps")
    eq(len(v["services"]), 1, "services: %r" % v["services"])
    s = v["services"][0]
    eq(s["vip"], "%s:%d" % (tk.VIP, tk.VIP_PORT), "VIP:port")
    eq(s["model"], "m", "model (from kepp's --fastpath)")
    eq(s["model_source"], "map", "model read from kepp_model_v1")
    eq(s["pool"], None, "no InferencePool with --endpoints")
    # bpftool prints the model map with its names.
    meta = env.dump("kepp_model_v1")
    eq(len(meta), 1, "one service in kepp_model_v1: %r" % meta)
    eq(meta[0]["formatted"]["value"]["model"], "m", "bpftool shows the model: %r" % meta)
    eq(meta[0]["formatted"]["value"]["id"], s["id"], "and the service id")
    check(s["fresh"] and 0 <= s["age_ms"] <= s["max_age_ms"], "fresh table: %r" % s)
    eq(s["xdp"], None, "no XDP counters without --xdp-iface")
    # The table is bpftool's, entry for entry.
    raw = env.dump("kepp_svc_v1")[0]["formatted"]["value"]
    eq(s["id"], raw["id"], "service id")
    eq(s["max_age_ms"], raw["max_age_ns"] / 1e6, "max age")
    eq([(b["addr"], b["weight"], b["base_inflight"]) for b in s["backends"]],
       [("%s:%d" % (tk.addr_str(b["addr"]["ip"]), tk.BE_PORT), b["weight"], b["inflight"])
        for b in raw["be"][:raw["n_backends"]]], "backends, weights and bases")
    eq(s["backends"][0]["addr"], "%s:%d" % (tk.BEST, tk.BE_PORT), "best-scored pod first")
    live = be_counts(env)
    for b in s["backends"]:
        for key in ("inflight", "connects", "closes", "srtt_us"):
            eq(b[key], live[b["addr"]][key], "%s %s" % (b["addr"], key))
    eq(sum(b["inflight"] for b in s["backends"]), 3, "held connections in flight")
    eq(v["verdicts"], tk.verdicts(env), "connect verdicts summed over CPUs")
    check(v["verdicts"]["picked"] >= 3, "steered connections counted: %r" % v["verdicts"])
    eq(v["other_backends"], [], "every counted backend is in the table")
    # The text view names the same things.
    text, _ = keppctl(env)
    check("%s:%d  model m" % (tk.VIP, tk.VIP_PORT) in text, text)
    check("(kepp pid %d)" % k.proc.pid in text, text)
    for b in s["backends"]:
        check(b["addr"] in text, "%s in:\n%s" % (b["addr"], text))
    # Pins of an older kepp have no kepp_model_v1: the model comes from the
    # command line of the kepp holding the maps.
    os.unlink(os.path.join(env.bpffs, "kepp", "kepp_model_v1"))
    s = view(env)["services"][0]
    eq((s["model"], s["model_source"]), ("m", "cmdline"), "model without kepp_model_v1")
    p.kill()
    p.wait()


def test_keppctl_after_kepp_stopped(env):
    # The default scrape interval: the table goes stale 1 s after kepp stops.
    k = env.kepp(["--kernel-keep"])
    tk.wait_scored(env)
    eq(view(env)["services"][0]["fresh"], True, "fresh while kepp runs")
    # The pins stay (--kernel-keep), nobody refreshes the table; the model
    # is still in kepp_model_v1.
    k.stop()
    max_age = view(env)["services"][0]["max_age_ms"]
    time.sleep(max_age / 1000 + 0.3)
    v = view(env)
    eq(v["kepp_pid"], None, "no kepp holds the maps")
    s = v["services"][0]
    eq((s["model"], s["model_source"]), ("m", "map"), "model from the map without kepp")
    eq(s["fresh"], False, "table stale once kepp stopped")
    check(s["age_ms"] > max_age, "age %r over the max age" % s["age_ms"])
    eq(len(s["backends"]), 3, "the last table is still there")
    text = keppctl(env)[0]
    check("STALE" in text and "model m " in text and "no kepp process" in text, text)
    # Pins an older kepp left (no kepp_model_v1) and no kepp: model unknown.
    os.unlink(os.path.join(env.bpffs, "kepp", "kepp_model_v1"))
    eq(view(env)["services"][0]["model"], None, "model unknown without map and kepp")
    check("model ?" in keppctl(env)[0], "text view says so")


def test_keppctl_xdp_counters(env):
    env.add_peer("kx1")
    env.kepp(["--xdp-iface", "kx1"])
    tk.wait_scored(env)
    r = env.http(['{"prompt":"x"}'], ns=env.peer)[0]
    eq(r["status"], 200, "served across the veth")
    time.sleep(0.3)  # the connection's last packets
    x = view(env)["services"][0]["xdp"]
    eq(x, tk.vip_counters(env), "XDP counters as bpftool sums them over CPUs")
    check(x["packets"] >= 4 and x["bytes"] > 200, "XDP counted the connection: %r" % x)
    check("XDP: %d packets, %d bytes, 0 SYNs shed" % (x["packets"], x["bytes"])
          in keppctl(env)[0], "text view shows the counters")


def test_keppctl_without_pins(env):
    _, err = keppctl(env, rc=1)
    check("no fast path pinned under" in err, err)
    _, err = keppctl(env, "--bogus", rc=2)
    check("fastpath takes" in err, err)
