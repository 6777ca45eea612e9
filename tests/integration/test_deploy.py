"""deploy/: the Helm chart, the gateway examples and the container image.

helm is not packaged in Debian, so the chart is rendered here by a small
evaluator of exactly the Go-template constructs the chart uses (text, if /
else if / else, range over lists and maps with variables, define / include,
and the functions printf, quote, default, toYaml, indent, nindent, eq, ne,
gt, and, or, not, int and fail). Anything else in a template is an error, so
the templates must stay within that subset for this check to be honest. The
rendered manifests are then parsed, checked against kepp's real flags, loaded
into kepp (the EndpointPickerConfigs and the InferencePool), and run against
the fake API server under the chart's own RBAC rules."""
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import yaml

import envoy
from envoy import TestFailure, check, eq, health_check, SERVING

sys.path.insert(0, os.path.join(envoy.ROOT, "tests", "k8s"))
import fake_apiserver as fa  # noqa: E402

DEPLOY = os.path.join(envoy.ROOT, "deploy")
CHART = os.path.join(DEPLOY, "helm", "kepp")
GATEWAYS = os.path.join(DEPLOY, "gateways")
RELEASE = "vllm-llama3"
NS = "inference"
LABELS = {"inferencePool": {"modelServers": {"matchLabels": {"app": "vllm-llama3"}}}}

FIXTURES = {"api": lambda: fa.FakeAPIServer(bookmark_interval=1.0)}


# ---- a Go-template evaluator for the chart's subset ------------------------------------

class RenderError(Exception):
    pass


ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)
TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>-?\d+(?:\.\d+)?)|'
                   r'(?P<decl>:=)|(?P<punct>[()|,])|'
                   r'(?P<word>\$?[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*|'
                   r'\$(?:\.[A-Za-z_][A-Za-z0-9_]*)*|(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.))')


def lex(src):
    """Text and action tokens, with {{- and -}} whitespace trimming applied."""
    out, pos = [], 0
    for m in ACTION.finditer(src):
        text = src[pos:m.start()]
        if m.group(1):
            text = text.rstrip(" \t\r\n")
        if out and out[-1][0] == "trim":
            out.pop()
            text = text.lstrip(" \t\r\n")
        out.append(("text", text))
        body = m.group(2)
        if not (body.startswith("/*") and body.endswith("*/")):
            out.append(("action", body))
        if m.group(3):
            out.append(("trim", None))
        pos = m.end()
    text = src[pos:]
    if out and out[-1][0] == "trim":
        out.pop()
        text = text.lstrip(" \t\r\n")
    out.append(("text", text))
    return out


def parse(tokens, defines, i=0, stop=("end",)):
    """Nodes up to a token whose keyword is in |stop|; returns (nodes, i, keyword, action)."""
    nodes = []
    while i < len(tokens):
        kind, val = tokens[i]
        i += 1
        if kind == "text":
            if val:
                nodes.append(("text", val))
            continue
        word = val.split(None, 1)[0] if val else ""
        if word in stop or (word == "else" and "else" in stop):
            return nodes, i, word, val
        if word == "if":
            branches, cond = [], val[2:].strip()
            while True:
                body, i, kw, act = parse(tokens, defines, i, ("end", "else"))
                branches.append((cond, body))
                if kw == "end":
                    nodes.append(("if", branches, []))
                    break
                rest = act[4:].strip()
                if rest.startswith("if "):
                    cond = rest[3:].strip()
                    continue
                if rest:
                    raise RenderError("unsupported: {{%s}}" % act)
                body, i, kw, _ = parse(tokens, defines, i, ("end",))
                nodes.append(("if", branches, body))
                break
        elif word == "range":
            spec = val[5:].strip()
            names = []
            m = re.match(r"(\$\w+)\s*(?:,\s*(\$\w+)\s*)?:=\s*(.*)$", spec, re.S)
            if m:
                names = [n for n in (m.group(1), m.group(2)) if n]
                spec = m.group(3)
            body, i, kw, _ = parse(tokens, defines, i, ("end",))
            nodes.append(("range", names, spec, body))
        elif word == "define":
            name = json.loads(val[6:].strip())
            body, i, kw, _ = parse(tokens, defines, i, ("end",))
            defines[name] = body
        elif word in ("end", "else", "with", "template", "block"):
            raise RenderError("unexpected or unsupported {{%s}}" % val)
        else:
            nodes.append(("out", val))
    if stop != ("<eof>",):
        raise RenderError("missing {{end}}")
    return nodes, i, None, None


def go_str(v):
    """How text/template prints a value (Helm prints a missing value as "")."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float, str)):
        return str(v)
    raise RenderError("printing a %s: use toYaml" % type(v).__name__)


def truthy(v):
    return not (v is None or v is False or v == 0 or v == "" or v == [] or v == {})


def to_yaml(v):
    return yaml.safe_dump(v, default_flow_style=False, sort_keys=True).rstrip("\n")


def indent(n, s):
    return "\n".join(" " * n + line for line in s.split("\n"))


def go_printf(fmt, *args):
    args = list(args)

    def one(m):
        if m.group(0) == "%%":
            return "%"
        if not args:
            raise RenderError("printf %r: too few arguments" % fmt)
        a = args.pop(0)
        return json.dumps(go_str(a)) if m.group(0) == "%q" else go_str(a)
    out = re.sub(r"%[svdq%]", one, fmt)
    if args:
        raise RenderError("printf %r: too many arguments" % fmt)
    return out


def to_int(v):
    if v is None:
        return 0
    try:
        return int(v)
    except (TypeError, ValueError):
        raise RenderError("int of %r" % (v,))


class Renderer:
    def __init__(self, chart, values):
        self.chart = chart
        self.defines = {}
        self.files = {}
        tdir = os.path.join(chart, "templates")
        for name in sorted(os.listdir(tdir)):
            with open(os.path.join(tdir, name)) as f:
                nodes, _, _, _ = parse(lex(f.read()), self.defines, 0, ("<eof>",))
            self.files[name] = nodes
        with open(os.path.join(chart, "Chart.yaml")) as f:
            meta = yaml.safe_load(f)
        self.root = {"Values": values,
                     "Release": {"Name": RELEASE, "Namespace": NS, "Service": "Helm"},
                     "Chart": {"Name": meta["name"], "Version": meta["version"],
                               "AppVersion": meta["appVersion"]}}

    def render_all(self):
        """{template file: text}, without the _helpers files."""
        return {name: self.run(nodes, self.root, {"$": self.root})
                for name, nodes in self.files.items() if not name.startswith("_")}

    def run(self, nodes, dot, env):
        out = []
        for n in nodes:
            if n[0] == "text":
                out.append(n[1])
            elif n[0] == "out":
                out.append(go_str(self.pipeline(n[1], dot, env)))
            elif n[0] == "if":
                for cond, body in n[1]:
                    if truthy(self.pipeline(cond, dot, env)):
                        out.append(self.run(body, dot, env))
                        break
                else:
                    out.append(self.run(n[2], dot, env))
            elif n[0] == "range":
                coll = self.pipeline(n[2], dot, env)
                items = (sorted(coll.items()) if isinstance(coll, dict)
                         else list(enumerate(coll or [])))
                for k, v in items:
                    e = dict(env)
                    if len(n[1]) == 1:
                        e[n[1][0]] = v
                    elif len(n[1]) == 2:
                        e[n[1][0]], e[n[1][1]] = k, v
                    out.append(self.run(n[3], v, e))
        return "".join(out)

    def tokens(self, expr):
        toks, pos = [], 0
        while pos < len(expr):
            m = TOKEN.match(expr, pos)
            if not m or m.end() == pos:
                if expr[pos:].strip() == "":
                    break
                raise RenderError("cannot read %r" % expr[pos:])
            toks.append((m.lastgroup, m.group(m.lastgroup)))
            pos = m.end()
        return toks

    def pipeline(self, expr, dot, env):
        toks = self.tokens(expr)
        val, i = self.pipe(toks, 0, dot, env)
        if i != len(toks):
            raise RenderError("trailing %r in %r" % (toks[i:], expr))
        return val

    def pipe(self, toks, i, dot, env):
        val, i, first = None, i, True
        while True:
            args = []
            while i < len(toks) and toks[i] not in (("punct", "|"), ("punct", ")")):
                if toks[i] == ("punct", "("):
                    v, i = self.pipe(toks, i + 1, dot, env)
                    if toks[i] != ("punct", ")"):
                        raise RenderError("missing )")
                    args.append(("val", v))
                    i += 1
                else:
                    args.append(toks[i])
                    i += 1
            if not args:
                raise RenderError("empty command")
            val = self.command(args, None if first else val, not first, dot, env)
            first = False
            if i < len(toks) and toks[i] == ("punct", "|"):
                i += 1
                continue
            return val, i

    def operand(self, tok, dot, env):
        kind, text = tok
        if kind == "val":
            return text
        if kind == "str":
            return json.loads(text)
        if kind == "num":
            return float(text) if "." in text else int(text)
        if kind == "word":
            if text in ("true", "false"):
                return text == "true"
            if text == "nil":
                return None
            if text == ".":
                return dot
            if text.startswith("$"):
                head, _, rest = text.partition(".")
                if head not in env:
                    raise RenderError("undefined variable %s" % head)
                return self.field(env[head], rest)
            if text.startswith("."):
                return self.field(dot, text[1:])
        raise RenderError("not a value: %r" % text)

    @staticmethod
    def field(v, path):
        for part in [p for p in path.split(".") if p]:
            if not isinstance(v, dict):
                raise RenderError("nil pointer evaluating .%s" % path)
            v = v.get(part)
        return v

    def command(self, args, piped, has_piped, dot, env):
        head = args[0]
        if head[0] == "word" and not head[1].startswith((".", "$")) and \
                head[1] not in ("true", "false", "nil"):
            a = [self.operand(t, dot, env) for t in args[1:]]
            if has_piped:
                a.append(piped)
            return self.call(head[1], a)
        if len(args) != 1 or has_piped:
            raise RenderError("cannot call a value: %r" % (args,))
        return self.operand(head, dot, env)

    def call(self, fn, a):
        if fn == "include":
            if a[0] not in self.defines:
                raise RenderError("no template %r" % a[0])
            return self.run(self.defines[a[0]], a[1], {"$": self.root})
        if fn == "printf":
            return go_printf(*a)
        if fn == "quote":
            return json.dumps(go_str(a[0]))
        if fn == "default":
            return a[1] if truthy(a[1]) else a[0]
        if fn == "toYaml":
            return to_yaml(a[0])
        if fn == "nindent":
            return "\n" + indent(a[0], a[1])
        if fn == "indent":
            return indent(a[0], a[1])
        if fn in ("eq", "ne"):
            same = a[0] == a[1] and type(a[0]) is type(a[1])
            return same if fn == "eq" else not same
        if fn == "gt":
            return a[0] > a[1]
        if fn == "int":
            return to_int(a[0])
        if fn == "not":
            return not truthy(a[0])
        if fn == "and":
            for v in a:
                if not truthy(v):
                    return v
            return a[-1]
        if fn == "or":
            for v in a:
                if truthy(v):
                    return v
            return a[-1]
        if fn == "fail":
            raise RenderError("fail: %s" % a[0])
        raise RenderError("unsupported function %s" % fn)


def merge(base, over):
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def chart_values():
    with open(os.path.join(CHART, "values.yaml")) as f:
        return yaml.safe_load(f)


def render(*overrides):
    """The chart's manifests for values.yaml with |overrides| merged in:
    a list of documents (kind, name, body)."""
    values = chart_values()
    for o in (LABELS,) + overrides:
        values = merge(values, o)
    docs = []
    for name, text in Renderer(CHART, values).render_all().items():
        if not name.endswith(".yaml"):
            continue
        try:
            parsed = list(yaml.safe_load_all(text))
        except yaml.YAMLError as e:
            raise TestFailure("%s does not render to YAML: %s\n%s" % (name, e, text))
        for d in parsed:
            if d is None:
                continue
            check(isinstance(d, dict) and d.get("apiVersion") and d.get("kind") and
                  d.get("metadata", {}).get("name"),
                  "%s: a document without apiVersion, kind or metadata.name:\n%s" % (name, text))
            docs.append(d)
    return docs


def one(docs, kind, name=None):
    found = [d for d in docs
             if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    eq(len(found), 1, "rendered %s %s" % (kind, name or ""))
    return found[0]


def kinds(docs):
    return sorted(d["kind"] for d in docs)


_HELP = []


def kepp_flags():
    if not _HELP:
        out = subprocess.run([os.path.join(envoy.BUILD_DIR, "kepp"), "--help"],
                             capture_output=True, text=True).stdout
        _HELP.append({m.group(1) for m in re.finditer(r"^  --([a-z0-9-]+)\s", out, re.M)})
        check(len(_HELP[0]) > 30, "kepp --help lists its flags:\n" + out)
    return _HELP[0]


def container(docs, kind):
    return one(docs, kind)["spec"]["template"]["spec"]["containers"][0]


def check_args(args, where):
    flags = kepp_flags()
    for a in args:
        check(isinstance(a, str) and a.startswith("--") and
              ("=" in a or a == "--ha-enable-leader-election"),
              "%s: argument %r is not --flag=value" % (where, a))
        check(a[2:].split("=", 1)[0] in flags, "%s: kepp has no flag %s" % (where, a))


def arg(args, flag):
    vals = [a.split("=", 1)[1] for a in args if a.startswith("--%s=" % flag)]
    return vals


# ---- the chart ---------------------------------------------------------------------

def values_paths(v, prefix=""):
    """Every key path of values.yaml, with the dicts on the way."""
    for k, sub in v.items():
        p = prefix + "." + k
        yield p
        if isinstance(sub, dict):
            yield from values_paths(sub, p)


def test_chart_values_and_templates_agree():
    refs = set()
    for name in os.listdir(os.path.join(CHART, "templates")):
        with open(os.path.join(CHART, "templates", name)) as f:
            refs |= set(re.findall(r"\.Values((?:\.[A-Za-z0-9_]+)+)", f.read()))
    values = chart_values()
    for r in sorted(refs):
        v = values
        for part in r.strip(".").split("."):
            check(isinstance(v, dict) and part in v,
                  "templates use .Values%s, which values.yaml does not define" % r)
            v = v[part]
    for p in values_paths(values):
        check(any(r == p or p.startswith(r + ".") or r.startswith(p + ".") for r in refs),
              "values.yaml defines %s, which no template uses" % p[1:])
    # The values that mean what the reference chart's mean keep its names.
    for p in ("inferenceExtension.replicas", "inferenceExtension.image.repository",
              "inferenceExtension.image.tag", "inferenceExtension.image.pullPolicy",
              "inferenceExtension.extProcPort", "inferenceExtension.failureMode",
              "inferenceExtension.env", "inferenceExtension.pluginsConfigFile",
              "inferenceExtension.pluginsCustomConfig", "inferenceExtension.flags",
              "inferenceExtension.extraContainerPorts", "inferenceExtension.extraServicePorts",
              "inferenceExtension.resources", "inferenceExtension.affinity",
              "inferenceExtension.tolerations", "inferenceExtension.monitoring.interval",
              "inferenceExtension.monitoring.prometheus.enabled",
              "inferenceExtension.metricsDataSource.path", "inferencePool.targetPorts",
              "inferencePool.modelServerType", "inferencePool.modelServerProtocol",
              "inferencePool.modelServers.matchLabels", "provider.name",
              "experimentalHttpRoute.enabled", "inferenceObjectives", "mode",
              "fastPath.services", "fastPath.xdpInterfaces", "fastPath.cgroup",
              "fastPath.bpffs"):
        check("." + p in set(values_paths(values)), "values.yaml has no %s" % p)


def test_chart_renders_the_endpoint_picker():
    docs = render()
    eq(kinds(docs), ["ConfigMap", "Deployment", "InferencePool", "Role", "RoleBinding",
                     "Service", "ServiceAccount"], "objects of the default mode")
    name = RELEASE + "-epp"
    c = container(docs, "Deployment")
    check_args(c["args"], "Deployment")
    eq(arg(c["args"], "kernel"), ["off"], "the Deployment has no kernel fast path")
    eq(arg(c["args"], "pool-name"), [RELEASE], "pool name")
    eq(arg(c["args"], "pool-namespace"), [NS], "pool namespace")
    eq(arg(c["args"], "config-file"), ["/config/default-plugins.yaml"], "config file")
    eq(arg(c["args"], "v"), ["2"], "inferenceExtension.flags pass through")
    check("--ha-enable-leader-election" not in c["args"], "no leader election for 1 replica")
    eq(c["readinessProbe"]["grpc"], {"port": 9003, "service": "inference-extension"}, "readiness")
    eq(c["livenessProbe"]["grpc"], {"port": 9003, "service": "inference-extension"}, "liveness")
    eq(sorted(p["containerPort"] for p in c["ports"]), [9002, 9003, 9090], "container ports")
    eq(c["env"][0]["name"], "NAMESPACE", "env")
    dep = one(docs, "Deployment")
    spec = dep["spec"]["template"]["spec"]
    eq(spec["serviceAccountName"], name, "service account")
    eq(dep["spec"]["selector"]["matchLabels"], dep["spec"]["template"]["metadata"]["labels"],
       "selector")
    svc = one(docs, "Service", name)
    eq(svc["spec"]["selector"], dep["spec"]["template"]["metadata"]["labels"],
       "the Service selects kepp's pods")
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    eq(ports["grpc-ext-proc"]["port"], 9002, "ext_proc port")
    eq(ports["grpc-ext-proc"].get("appProtocol"), "http2", "appProtocol of the ext_proc port")
    eq(ports["grpc-health"]["port"], 9003, "health port")
    eq(ports["http-metrics"]["port"], 9090, "metrics port")
    pool = one(docs, "InferencePool", RELEASE)
    ref = pool["spec"]["endpointPickerRef"]
    eq((ref["name"], ref["port"]["number"]), (name, 9002), "endpointPickerRef names the Service")
    eq(ref["failureMode"], "FailOpen", "the reference chart's default failure mode")
    eq(pool["spec"]["selector"]["matchLabels"], {"app": "vllm-llama3"}, "pool selector")
    eq(pool["spec"]["targetPorts"], [{"number": 8000}], "target ports")
    cm = one(docs, "ConfigMap", name)
    vols = {v["name"]: v for v in spec["volumes"]}
    eq(vols["plugins-config-volume"]["configMap"]["name"], name, "the config volume")
    check("default-plugins.yaml" in cm["data"], "the ConfigMap holds default-plugins.yaml")


def test_chart_replicas_turn_on_leader_election():
    docs = render({"inferenceExtension": {"replicas": 3}})
    c = container(docs, "Deployment")
    check("--ha-enable-leader-election" in c["args"], "leader election with 3 replicas")
    eq(c["readinessProbe"]["grpc"]["service"], "readiness", "readiness probe service")
    eq(c["livenessProbe"]["grpc"]["service"], "liveness", "liveness probe service")
    eq(one(docs, "Deployment")["spec"]["replicas"], 3, "replicas")
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Role"}
    le = roles[RELEASE + "-epp-leader-election"]
    eq(le["rules"], [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                      "verbs": ["get", "create", "update"]}], "the Lease rules")
    binding = one(docs, "RoleBinding", RELEASE + "-epp-leader-election")
    eq(binding["roleRef"]["name"], le["metadata"]["name"], "the Lease Role is bound")
    # Without leader election no Lease permission is granted.
    for d in render():
        for rule in d.get("rules", []):
            check("leases" not in rule["resources"], "Lease rules without leader election")


def test_chart_daemonset_with_the_kernel_fast_path():
    docs = render({"mode": "daemonset",
                   "fastPath": {"services": ["10.96.0.50:8000=llama3"],
                                "xdpInterfaces": ["eth0"], "cgroupSubPath": "kubepods.slice"}})
    check("Deployment" not in kinds(docs), "no Deployment in daemonset mode")
    ds = one(docs, "DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    c = spec["containers"][0]
    check_args(c["args"], "DaemonSet")
    eq(arg(c["args"], "kernel"), ["auto"], "kernel mode")
    eq(arg(c["args"], "fastpath"), ["10.96.0.50:8000=llama3"], "fast-path services")
    eq(arg(c["args"], "xdp-iface"), ["eth0"], "XDP interfaces")
    eq(arg(c["args"], "cgroup"), ["/host/cgroup/kubepods.slice"], "cgroup")
    eq(spec["hostNetwork"], True, "hostNetwork")
    eq(spec["dnsPolicy"], "ClusterFirstWithHostNet", "DNS with hostNetwork")
    eq(spec["nodeSelector"], {"nvidia.com/gpu.present": "true"}, "GPU nodes")
    sc = c["securityContext"]
    eq(sorted(sc["capabilities"]["add"]), ["BPF", "NET_ADMIN", "PERFMON"], "capabilities")
    eq(sc["capabilities"]["drop"], ["ALL"], "the rest dropped")
    check(not sc.get("privileged"), "not privileged")
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    eq(mounts["bpffs"]["mountPath"], arg(c["args"], "bpffs")[0], "bpffs mount is --bpffs")
    eq(mounts["bpffs"]["mountPropagation"], "HostToContainer", "bpffs propagation")
    eq(mounts["cgroup"]["mountPath"], "/host/cgroup", "cgroup mount")
    vols = {v["name"]: v for v in spec["volumes"]}
    eq(vols["bpffs"]["hostPath"], {"path": "/sys/fs/bpf", "type": "Directory"}, "host bpffs")
    eq(vols["cgroup"]["hostPath"]["path"], "/sys/fs/cgroup", "host cgroup tree")
    svc = one(docs, "Service")
    eq(svc["spec"]["selector"], ds["spec"]["template"]["metadata"]["labels"],
       "the Service selects the DaemonSet's pods")
    # A node without bpffs: kepp mounts it, which takes a privileged container.
    docs = render({"mode": "daemonset", "fastPath": {"mountBpffs": True}})
    c = container(docs, "DaemonSet")
    eq(c["securityContext"].get("privileged"), True, "privileged to propagate its bpffs mount")
    check("SYS_ADMIN" in c["securityContext"]["capabilities"]["add"], "CAP_SYS_ADMIN to mount")
    eq({m["name"]: m for m in c["volumeMounts"]}["bpffs"]["mountPropagation"], "Bidirectional",
       "bpffs propagation when kepp mounts it")


def test_chart_optional_objects_and_passthrough_values():
    docs = render({"provider": {"name": "istio"},
                   "experimentalHttpRoute": {"enabled": True},
                   "inferenceObjectives": [{"name": "chat", "priority": 10},
                                           {"name": "batch", "priority": -1}],
                   "inferenceExtension": {
                       "monitoring": {"prometheus": {"enabled": True,
                                                     "extraLabels": {"release": "prom"}}},
                       "env": [{"name": "EXTRA", "value": "1"}],
                       "extraServicePorts": [{"name": "http", "port": 8081}],
                       "extraContainerPorts": [{"name": "http", "containerPort": 8081}],
                       "tolerations": [{"key": "dedicated", "operator": "Exists"}],
                       "image": {"registry": "registry.example.com"},
                       "failureMode": "FailClose",
                       "flags": {"refresh-metrics-interval": "100ms",
                                 "exclude-stale-endpoints": False}},
                   "inferencePool": {"modelServerProtocol": "grpc",
                                     "targetPorts": [{"number": 8000}, {"number": 8001}]}})
    dr = one(docs, "DestinationRule")
    eq(dr["spec"]["host"], "%s-epp.%s.svc.cluster.local" % (RELEASE, NS), "DestinationRule host")
    eq(dr["spec"]["trafficPolicy"]["tls"], {"mode": "SIMPLE", "insecureSkipVerify": True},
       "Istio reaches kepp's self-signed TLS port")
    route = one(docs, "HTTPRoute")
    eq(route["spec"]["rules"][0]["backendRefs"][0]["name"], RELEASE, "the route's pool")
    objs = sorted((d["metadata"]["name"], d["spec"]["priority"])
                  for d in docs if d["kind"] == "InferenceObjective")
    eq(objs, [("batch", -1), ("chat", 10)], "objectives")
    sm = one(docs, "ServiceMonitor")
    eq(sm["metadata"]["labels"]["release"], "prom", "ServiceMonitor extra labels")
    eq(sm["spec"]["endpoints"][0]["port"], "http-metrics", "ServiceMonitor port")
    c = container(docs, "Deployment")
    check_args(c["args"], "Deployment")
    eq(arg(c["args"], "exclude-stale-endpoints"), ["false"], "a boolean flag")
    eq(arg(c["args"], "refresh-metrics-interval"), ["100ms"], "a duration flag")
    eq(c["image"], "registry.example.com/kepp:0.1.0", "image with a registry")
    check({"name": "EXTRA", "value": "1"} in c["env"], "extra env")
    check({"name": "http", "containerPort": 8081} in c["ports"], "extra container port")
    check({"name": "http", "port": 8081} in one(docs, "Service")["spec"]["ports"],
          "extra service port")
    eq(one(docs, "Deployment")["spec"]["template"]["spec"]["tolerations"],
       [{"key": "dedicated", "operator": "Exists"}], "tolerations")
    pool = one(docs, "InferencePool")
    eq(pool["spec"]["appProtocol"], "kubernetes.io/h2c", "gRPC model servers")
    eq(pool["spec"]["endpointPickerRef"]["failureMode"], "FailClose", "failure mode")
    eq(len(pool["spec"]["targetPorts"]), 2, "two target ports")


def test_chart_refuses_a_pool_without_model_servers():
    values = chart_values()
    try:
        Renderer(CHART, values).render_all()
    except RenderError as e:
        check("matchLabels is required" in str(e), str(e))
        return
    raise TestFailure("the chart rendered a pool that selects no pods")


def tiny_chart(d, template):
    os.makedirs(os.path.join(d, "templates"))
    with open(os.path.join(d, "Chart.yaml"), "w") as f:
        f.write("name: t\nversion: 0.0.1\nappVersion: '1'\n")
    with open(os.path.join(d, "templates", "t.yaml"), "w") as f:
        f.write(template)
    return d


def test_the_evaluator_rejects_what_it_does_not_implement():
    """The chart check is only as good as the evaluator: constructs outside
    its subset must fail, not render as something else."""
    for src in ('{{ lookup "v1" "Pod" "" "" }}', "{{ with .Values }}x{{ end }}",
                "{{ if .Values.a }}x", "{{ .Values.a.b.c }}"):
        with tempfile.TemporaryDirectory(prefix="kepp-chart-") as d:
            try:
                Renderer(tiny_chart(d, src), {"a": None}).render_all()
            except RenderError:
                continue
        raise TestFailure("the evaluator accepted %r" % src)
    # Trimming and a range over a map, as Helm renders them.
    src = ("a:\n  {{- range $k, $v := .Values.m }}\n  - {{ $k }}={{ $v }}\n  {{- end }}\n"
           "b: {{ .Values.missing | default \"d\" | quote }}\n")
    with tempfile.TemporaryDirectory(prefix="kepp-chart-") as d:
        out = Renderer(tiny_chart(d, src), {"m": {"y": 2, "x": True}}).render_all()["t.yaml"]
    eq(out, 'a:\n  - x=true\n  - y=2\nb: "d"\n', "rendered text")


def test_chart_configs_and_pool_load_in_kepp():
    """kepp itself accepts what the chart gives it: every EndpointPickerConfig
    of the ConfigMap (strictly decoded) and the InferencePool and
    InferenceObjectives (as --manifests)."""
    lora = ("apiVersion: inference.networking.x-k8s.io/v1alpha1\n"
            "kind: EndpointPickerConfig\nplugins:\n- type: queue-scorer\n"
            "- type: lora-affinity-scorer\n  parameters:\n    residentAdapters: true\n"
            "schedulingProfiles:\n- name: default\n  plugins:\n  - pluginRef: queue-scorer\n"
            "  - pluginRef: lora-affinity-scorer\n    weight: 3\n")
    for over in ({}, {"inferencePool": {"modelServerType": "sglang"},
                      "inferenceExtension": {"metricsDataSource": {"scheme": "https"},
                                             "pluginsCustomConfig": {"lora.yaml": lora}}}):
        docs = render(over, {"inferenceObjectives": [{"name": "chat", "priority": 5}]})
        cm = one(docs, "ConfigMap")
        with tempfile.TemporaryDirectory(prefix="kepp-chart-") as tmp:
            for fname, text in cm["data"].items():
                path = os.path.join(tmp, fname)
                with open(path, "w") as f:
                    f.write(text)
                with envoy.Kepp(config_file=path):
                    pass
        manifests = "".join("---\n" + yaml.safe_dump(d) for d in docs
                            if d["kind"] in ("InferencePool", "InferenceObjective"))
        with envoy.Kepp(endpoints=["127.0.0.1"], manifests=manifests, pool_name=RELEASE,
                        pool_namespace=NS, extra=["--v", "3"]) as k:
            eq(health_check(k.health_port, "inference-extension"), SERVING, "pool loaded")
    eq(sorted(cm["data"]), ["default-plugins.yaml", "lora.yaml"], "custom configs added")
    check('defaultEngine: "sglang"' in cm["data"]["default-plugins.yaml"],
          "modelServerType reaches the metrics extractor")


def rules_of(docs, kinds_=("Role", "ClusterRole")):
    return [r for d in docs if d["kind"] in kinds_ for r in d["rules"]]


def grants(rules):
    return {(g, r, v) for rule in rules for g in rule["apiGroups"]
            for r in rule["resources"] for v in rule["verbs"]}


def test_chart_rbac_runs_the_charts_kepp(api):
    """The chart's Roles grant what deploy/rbac.yaml and rbac-leader-election.yaml
    grant (test_k8s proves those exact), and kepp started with the chart's own
    arguments works under them against the fake API server."""
    docs = render({"inferenceExtension": {"replicas": 2}})
    plain = []
    for fname in ("rbac.yaml", "rbac-leader-election.yaml"):
        with open(os.path.join(DEPLOY, fname)) as f:
            plain += [d for d in yaml.safe_load_all(f) if d]
    eq(grants(rules_of(docs)), grants(rules_of(plain)), "chart RBAC == deploy/ RBAC")
    api.enforce_rbac(rules_of(docs))
    pool = dict(one(docs, "InferencePool"), status={"parents": []})
    api.create(pool)
    api.create(fa.pod("p0", "127.0.2.1", pool["spec"]["selector"]["matchLabels"], ns=NS))
    args = container(docs, "Deployment")["args"]
    own = ("grpc-port", "grpc-health-port", "metrics-port", "config-file")
    extra = [a for a in args if a[2:].split("=", 1)[0] not in own]
    cfg = os.path.join(api.tmp, "default-plugins.yaml")
    with open(cfg, "w") as f:
        f.write(one(docs, "ConfigMap")["data"]["default-plugins.yaml"])
    kc = api.kubeconfig(os.path.join(api.tmp, "kubeconfig"))
    k = envoy.Kepp(endpoints=None, pool_name=RELEASE, config_file=cfg,
                   extra=extra + ["--kubeconfig", kc, "--ha-lease-duration", "2s",
                                  "--ha-renew-deadline", "1500ms", "--ha-retry-period", "200ms"])
    with k:
        deadline = time.time() + 10
        while time.time() < deadline:
            if health_check(k.health_port, "readiness") == SERVING:
                break
            time.sleep(0.05)
        eq(health_check(k.health_port, "readiness"), SERVING, "the chart's kepp leads and is ready")
        lease = "epp-%s-%s.gateway-api-inference-extension.sigs.k8s.io" % (NS, RELEASE)
        check(api.get(("coordination.k8s.io", "v1", "leases"), lease, ns=NS) is not None,
              "no Lease %s in the pool's namespace" % lease)
    eq(api.denied, [], "requests the chart's Roles forbid")


# ---- every manifest, the gateway examples --------------------------------------------

def yaml_files(top, skip=()):
    for d, dirs, files in os.walk(top):
        dirs[:] = sorted(x for x in dirs if os.path.join(d, x) not in skip)
        for f in sorted(files):
            if f.endswith((".yaml", ".yml")):
                yield os.path.join(d, f)


def load_all(path):
    with open(path) as f:
        try:
            return [d for d in yaml.safe_load_all(f) if d is not None]
        except yaml.YAMLError as e:
            raise TestFailure("%s: %s" % (path, e))


def test_every_manifest_parses():
    """Every YAML file under deploy/ (the chart's templates excepted: they are
    rendered above) parses; Kubernetes documents name apiVersion, kind and
    metadata.name; the rest are an Envoy bootstrap, Helm values and kepp
    configs, which the tests below read."""
    files = list(yaml_files(DEPLOY, skip={os.path.join(CHART, "templates")}))
    check(len(files) > 15, "only %d YAML files under deploy/" % len(files))
    for path in files:
        rel = os.path.relpath(path, DEPLOY)
        docs = load_all(path)
        check(docs, "%s: no document" % rel)
        for d in docs:
            check(isinstance(d, dict), "%s: a document that is not a mapping" % rel)
            if d.get("kind") == "EndpointPickerConfig":
                check(d.get("apiVersion"), "%s: EndpointPickerConfig without apiVersion" % rel)
            elif "kind" in d:
                check(d.get("apiVersion") and d.get("metadata", {}).get("name"),
                      "%s: %s without apiVersion or metadata.name" % (rel, d["kind"]))
            else:
                check(rel in ("gateways/envoy/envoy.yaml", "helm/kepp/values.yaml",
                              "helm/kepp/Chart.yaml",
                              "gateways/envoy-gateway/envoy-gateway-values.yaml"),
                      "%s: a document without a kind" % rel)


def plain(kind):
    found = [d for p in yaml_files(DEPLOY, skip={os.path.join(DEPLOY, "helm"),
                                                 os.path.join(DEPLOY, "gateways")})
             for d in load_all(p) if d.get("kind") == kind]
    check(found, "deploy/ has no %s" % kind)
    return found


def test_gateway_examples_route_to_the_pool_through_kepp():
    pool = [d for d in plain("InferencePool") if d["apiVersion"].endswith("/v1")][0]
    svc = plain("Service")[0]
    ref = pool["spec"]["endpointPickerRef"]
    eq((ref["name"], ref["port"]["number"]), (svc["metadata"]["name"], 9002),
       "the example pool's endpointPickerRef names kepp's Service")
    classes = {"envoy-gateway": "envoy-gateway", "kgateway": "kgateway", "istio": "istio"}
    eq(sorted(os.listdir(GATEWAYS)), sorted(list(classes) + ["envoy"]), "gateway examples")
    for gw, cls in classes.items():
        docs = load_all(os.path.join(GATEWAYS, gw, "gateway.yaml"))
        gateways = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Gateway"}
        eq([g["spec"]["gatewayClassName"] for g in gateways.values()], [cls], gw + " class")
        routes = [d for d in docs if d["kind"] == "HTTPRoute"]
        check(routes, gw + ": no HTTPRoute")
        for r in routes:
            for p in r["spec"]["parentRefs"]:
                check(p["name"] in gateways, "%s: route parent %s" % (gw, p["name"]))
            for rule in r["spec"]["rules"]:
                for b in rule["backendRefs"]:
                    eq((b["group"], b["kind"], b["name"]),
                       ("inference.networking.k8s.io", "InferencePool", pool["metadata"]["name"]),
                       gw + " backendRef")
    dr = [d for d in load_all(os.path.join(GATEWAYS, "istio", "gateway.yaml"))
          if d["kind"] == "DestinationRule"][0]
    eq(dr["spec"]["host"], "%s.%s.svc.cluster.local" % (svc["metadata"]["name"],
                                                        svc["metadata"]["namespace"]),
       "the DestinationRule is for kepp's Service")
    eq(dr["spec"]["trafficPolicy"]["tls"]["mode"], "SIMPLE", "Istio speaks TLS to kepp")
    gc = [d for d in load_all(os.path.join(GATEWAYS, "envoy-gateway", "gateway.yaml"))
          if d["kind"] == "GatewayClass"][0]
    eq(gc["spec"]["controllerName"], "gateway.envoyproxy.io/gatewayclass-controller",
       "Envoy Gateway's controller")
    vals = load_all(os.path.join(GATEWAYS, "envoy-gateway", "envoy-gateway-values.yaml"))[0]
    eq(vals["config"]["envoyGateway"]["extensionManager"]["backendResources"],
       [{"group": "inference.networking.k8s.io", "kind": "InferencePool", "version": "v1"}],
       "Envoy Gateway hands InferencePools to its extension server")


def test_envoy_bootstrap_calls_kepp_and_routes_to_its_pick():
    from google.protobuf import json_format
    from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
    boot = load_all(os.path.join(GATEWAYS, "envoy", "envoy.yaml"))[0]
    svc = plain("Service")[0]
    clusters = {c["name"]: c for c in boot["static_resources"]["clusters"]}
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    hcm = hcm["typed_config"]
    filters = [f["name"] for f in hcm["http_filters"]]
    eq(filters, ["envoy.filters.http.ext_proc", "envoy.filters.http.router"], "filter order")
    ext = hcm["http_filters"][0]["typed_config"]
    eq(ext["@type"], "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3."
       "ExternalProcessor", "ext_proc filter type")
    mode = json_format.ParseDict(ext["processing_mode"], processing_mode_pb2.ProcessingMode())
    PM = processing_mode_pb2.ProcessingMode
    eq((mode.request_body_mode, mode.response_body_mode),
       (PM.FULL_DUPLEX_STREAMED, PM.FULL_DUPLEX_STREAMED), "FULL_DUPLEX_STREAMED bodies")
    eq((mode.request_trailer_mode, mode.response_trailer_mode), (PM.SEND, PM.SEND),
       "trailers are sent (FULL_DUPLEX_STREAMED needs them)")
    eq(ext["metadata_options"]["receiving_namespaces"]["untyped"], ["envoy.lb"],
       "kepp's envoy.lb metadata is received")
    kepp = clusters[ext["grpc_service"]["envoy_grpc"]["cluster_name"]]
    sa = kepp["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    eq((sa["socket_address"]["address"], sa["socket_address"]["port_value"]),
       ("%s.%s.svc" % (svc["metadata"]["name"], svc["metadata"]["namespace"]), 9002),
       "the ext_proc cluster is kepp's Service")
    opts = kepp["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    check("http2_protocol_options" in opts["explicit_http_config"], "gRPC needs HTTP/2")
    eq(kepp["transport_socket"]["name"], "envoy.transport_sockets.tls",
       "kepp serves TLS by default")
    route = hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"]
    dst = clusters[route["cluster"]]
    eq((dst["type"], dst["lb_policy"]), ("ORIGINAL_DST", "CLUSTER_PROVIDED"), "pick cluster")
    eq(dst["original_dst_lb_config"], {"use_http_header": True,
                                       "http_header_name": envoy.DEST},
       "requests go where kepp's header says")
    dep = load_all(os.path.join(GATEWAYS, "envoy", "deployment.yaml"))
    cport = [d for d in dep if d["kind"] == "Deployment"][0]["spec"]["template"]["spec"][
        "containers"][0]["ports"][0]["containerPort"]
    eq(cport, boot["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"],
       "the Deployment exposes the listener")


# ---- the container image -------------------------------------------------------------

def containerfile():
    with open(os.path.join(DEPLOY, "Containerfile")) as f:
        text = f.read()
    return re.sub(r"\\\n", " ", text)


def test_containerfile_installs_what_kepp_links():
    text = containerfile()
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    eq(len(stages), 2, "a build stage and a runtime stage")
    check(stages[0].startswith("docker.io/library/debian:12 "), "build on Debian 12")
    check(stages[1].startswith("docker.io/library/debian:12-slim"), "run on Debian 12 slim")
    for src in re.findall(r"^COPY (?!--from)(\S+)", stages[0], re.M):
        check(os.path.exists(os.path.join(envoy.ROOT, src)), "COPY of a missing %s" % src)
    check(re.search(r"^RUN make .*/out/kepp", stages[0], re.M), "the build stage runs make")
    install = re.search(r"apt-get install -y --no-install-recommends ([^&]*)", stages[1])
    check(install, "the runtime stage installs its libraries with apt-get")
    pkgs = install.group(1).split()
    # Every package exists in Debian 12 (this machine's release).
    with open("/etc/os-release") as f:
        check('VERSION_ID="12"' in f.read(), "this check needs a Debian 12 machine")
    shown = subprocess.run(["apt-cache", "show"] + pkgs, capture_output=True, text=True).stdout
    for p in pkgs:
        check(("Package: %s\n" % p) in shown, "Debian 12 has no package %s" % p)
    # Each library kepp needs directly comes from one of them (libc6 is in the
    # base image); nothing is installed that kepp does not need.
    binary = os.path.join(envoy.BUILD_DIR, "kepp")
    dyn = subprocess.run(["readelf", "-d", binary], capture_output=True, text=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dyn)
    # A sanitizer build (make asan) also links the sanitizer runtimes, which
    # the image's build never does.
    needed = [n for n in needed if not n.startswith(("libasan.", "libubsan."))]
    check(len(needed) > 5, "readelf found no NEEDED entries:\n" + dyn)
    ldd = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
    paths = dict(re.findall(r"^\s*(\S+) => (\S+)", ldd, re.M))
    owners = set()
    for lib in needed:
        # dpkg knows a file by the path its package ships, before or after
        # the /usr merge.
        real = os.path.realpath(paths[lib])
        tries = {paths[lib], real, re.sub(r"^/usr/", "/", real)}
        out = ""
        for path in sorted(tries):
            out = out or subprocess.run(["dpkg", "-S", path], capture_output=True,
                                        text=True).stdout
        check(out, "no package owns %s" % sorted(tries))
        owner = out.split(":", 1)[0]
        owners.add(owner)
        check(owner == "libc6" or owner in pkgs,
              "kepp needs %s (%s) and the image does not install it" % (lib, owner))
    eq(sorted(set(pkgs) - owners - {"ca-certificates"}), [],
       "runtime packages kepp does not link")
    check("ca-certificates" in pkgs, "CA certificates for https scrapes and the API server")
