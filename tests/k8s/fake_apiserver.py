#!/usr/bin/python3
"""A fake Kubernetes API server that speaks the real list/watch protocol, for
kepp's tests (no kube-apiserver can run on the test machines).

What it does as the real server does:
- HTTPS with a CA it makes (openssl), bearer-token authentication (401 Status
  otherwise), JSON only, HTTP/1.1 with keep-alive.
- Namespaced collections and objects of the resources in RESOURCES: GET
  (list, watch, one object), POST (create), PUT (update, 409 Conflict on a
  stale metadata.resourceVersion), DELETE.
- Objects shaped as the API server returns them: apiVersion, kind, metadata
  with uid, resourceVersion, generation, creationTimestamp and managedFields,
  and status. A global resourceVersion counter, as etcd's revision.
- Lists: metadata.resourceVersion, chunking with limit/continue (each page at
  the first page's version), items of built-in kinds without apiVersion/kind
  (as the typed server omits them), fieldSelector (metadata.name,
  metadata.namespace) and labelSelector (=, ==, !=, in, notin, exists, !).
  410 Gone for a continue token or an Exact resourceVersion older than the
  last compaction.
- Watches (?watch=1): newline-delimited JSON events (ADDED, MODIFIED, DELETED,
  BOOKMARK, ERROR) over chunked HTTP, from a resourceVersion (older than the
  compaction: one ERROR event with a Status of code 410, reason Expired),
  objects that enter or leave a selector as ADDED / DELETED, bookmarks when
  allowWatchBookmarks=true, timeoutSeconds honoured with a clean end.
- 403 Forbidden Status for a resource and verb the test forbids; 404 for a
  resource not installed (a CRD missing).

Control for tests, in-process (import this module): create/update/patch/
delete objects, cut or stall watches, hold new watches, compact (expire old
resourceVersions), forbid verbs, uninstall resources, rotate tokens, and read
the request log. Run as a program it serves objects from YAML/JSON files and
writes a kubeconfig: fake_apiserver.py --kubeconfig out.yaml objects.yaml...
"""
import base64
import bisect
import copy
import datetime
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# (group, version, plural) -> kind. Core group is "".
RESOURCES = {
    ("", "v1", "pods"): "Pod",
    ("inference.networking.k8s.io", "v1", "inferencepools"): "InferencePool",
    ("inference.networking.x-k8s.io", "v1alpha2", "inferencepools"): "InferencePool",
    ("inference.networking.x-k8s.io", "v1alpha2", "inferenceobjectives"): "InferenceObjective",
    ("inference.networking.x-k8s.io", "v1alpha2", "inferencemodelrewrites"): "InferenceModelRewrite",
    ("inference.networking.x-k8s.io", "v1alpha2", "inferencemodels"): "InferenceModel",
    ("coordination.k8s.io", "v1", "leases"): "Lease",
}
BUILTIN = {"", "coordination.k8s.io"}  # typed lists: items carry no apiVersion/kind


def now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def api_version(group, version):
    return "%s/%s" % (group, version) if group else version


def status(code, reason, message, details=None):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "details": details or {}, "code": code}


def resource_of(obj):
    """The (group, version, plural) of an object from its apiVersion and kind."""
    av = obj["apiVersion"]
    group, version = av.split("/", 1) if "/" in av else ("", av)
    for key, kind in RESOURCES.items():
        if key[0] == group and key[1] == version and kind == obj["kind"]:
            return key
    raise KeyError("no resource for %s %s" % (av, obj["kind"]))


# ---- selectors ------------------------------------------------------------

def parse_label_selector(s):
    """Requirements as (key, op, values); raises ValueError when malformed."""
    reqs = []
    if not s:
        return reqs
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    for p in parts:
        p = p.strip()
        if not p:
            raise ValueError("empty requirement")
        for word, op in ((" notin ", "notin"), (" in ", "in")):
            if word in p:
                k, vals = p.split(word, 1)
                vals = vals.strip()
                if not (vals.startswith("(") and vals.endswith(")")):
                    raise ValueError(p)
                reqs.append((k.strip(), op, {v.strip() for v in vals[1:-1].split(",")}))
                break
        else:
            if "!=" in p:
                k, v = p.split("!=", 1)
                reqs.append((k.strip(), "!=", {v.strip()}))
            elif "==" in p:
                k, v = p.split("==", 1)
                reqs.append((k.strip(), "=", {v.strip()}))
            elif "=" in p:
                k, v = p.split("=", 1)
                reqs.append((k.strip(), "=", {v.strip()}))
            elif p.startswith("!"):
                reqs.append((p[1:].strip(), "!", set()))
            else:
                reqs.append((p, "exists", set()))
    return reqs


def labels_match(reqs, labels):
    labels = labels or {}
    for k, op, vals in reqs:
        has = k in labels
        v = labels.get(k)
        if op == "=" and not (has and v in vals):
            return False
        if op == "!=" and has and v in vals:
            return False
        if op == "in" and not (has and v in vals):
            return False
        if op == "notin" and has and v in vals:
            return False
        if op == "exists" and not has:
            return False
        if op == "!" and has:
            return False
    return True


def parse_field_selector(s):
    reqs = []
    for p in (s or "").split(","):
        if not p:
            continue
        neg = "!=" in p
        k, v = p.split("!=" if neg else ("==" if "==" in p else "="), 1)
        if k not in ("metadata.name", "metadata.namespace"):
            raise ValueError('field label not supported: %s' % k)
        reqs.append((k, neg, v))
    return reqs


def fields_match(reqs, obj):
    for k, neg, v in reqs:
        actual = obj["metadata"].get(k.split(".", 1)[1], "")
        if (actual == v) == neg:
            return False
    return True


# ---- the store --------------------------------------------------------------

class Store:
    """Objects, the resourceVersion counter and the event history."""

    def __init__(self):
        self.cond = threading.Condition()
        self.rv = 1000
        self.objects = {}     # (resource, ns, name) -> obj
        self.history = []     # (rv, resource, type, old, new)
        self.history_rvs = []
        self.compacted = 0

    def _record(self, res, typ, old, new):
        self.history.append((self.rv, res, typ, old, new))
        self.history_rvs.append(self.rv)
        self.cond.notify_all()

    def create(self, obj):
        with self.cond:
            obj = copy.deepcopy(obj)
            res = resource_of(obj)
            md = obj.setdefault("metadata", {})
            md.setdefault("namespace", "default")
            key = (res, md["namespace"], md["name"])
            if key in self.objects:
                return None
            self.rv += 1
            md["uid"] = str(uuid.uuid4())
            md["resourceVersion"] = str(self.rv)
            md["generation"] = 1
            md.setdefault("creationTimestamp", now_rfc3339())
            md["managedFields"] = [{"manager": "fake-apiserver", "operation": "Update",
                                    "apiVersion": obj["apiVersion"], "time": now_rfc3339(),
                                    "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]
            if res[0] in BUILTIN or "status" in obj:
                obj.setdefault("status", {})
            self.objects[key] = obj
            self._record(res, "ADDED", None, obj)
            return copy.deepcopy(obj)

    def update(self, obj, check_rv=False):
        """None when absent; "conflict" on a stale resourceVersion."""
        with self.cond:
            obj = copy.deepcopy(obj)
            res = resource_of(obj)
            md = obj["metadata"]
            md.setdefault("namespace", "default")
            key = (res, md["namespace"], md["name"])
            old = self.objects.get(key)
            if old is None:
                return None
            if check_rv and md.get("resourceVersion") != old["metadata"]["resourceVersion"]:
                return "conflict"
            self.rv += 1
            for f in ("uid", "creationTimestamp", "managedFields", "generation"):
                md[f] = copy.deepcopy(old["metadata"][f])
            if obj.get("spec") != old.get("spec"):
                md["generation"] = old["metadata"]["generation"] + 1
            md["resourceVersion"] = str(self.rv)
            self.objects[key] = obj
            self._record(res, "MODIFIED", old, obj)
            return copy.deepcopy(obj)

    def delete(self, res, ns, name):
        with self.cond:
            old = self.objects.pop((res, ns, name), None)
            if old is None:
                return None
            self.rv += 1
            gone = copy.deepcopy(old)
            gone["metadata"]["resourceVersion"] = str(self.rv)
            self._record(res, "DELETED", old, gone)
            return gone

    def state_at(self, res, ns, rv):
        """Objects of |res| in |ns| as of |rv| (for consistent list pages)."""
        out = {}
        for erv, eres, typ, old, new in self.history:
            if erv > rv:
                break
            if eres != res or new["metadata"]["namespace"] != ns:
                continue
            if typ == "DELETED":
                out.pop(new["metadata"]["name"], None)
            else:
                out[new["metadata"]["name"]] = new
        return out


# ---- HTTP ---------------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-apiserver"

    def log_message(self, fmt, *args):  # quiet: tests read api.requests instead
        pass

    @property
    def api(self):
        return self.server.api

    # -- plumbing --

    def send_json(self, code, obj):
        body = json.dumps(obj, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"null") if n else None

    def route(self):
        """(resource, ns, name, query) or None after answering an error."""
        u = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(u.query, keep_blank_values=True))
        parts = [p for p in u.path.split("/") if p]
        if parts[:1] == ["api"] and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            self.send_json(404, status(404, "NotFound", "the server could not find the requested resource"))
            return None
        if len(rest) not in (3, 4) or rest[0] != "namespaces":
            self.send_json(404, status(404, "NotFound", "the server could not find the requested resource"))
            return None
        res = (group, version, rest[2])
        if res not in RESOURCES or res in self.api.uninstalled:
            self.send_json(404, status(404, "NotFound", "the server could not find the requested resource"))
            return None
        return res, rest[1], rest[3] if len(rest) == 4 else None, q

    def authorized(self):
        if self.api.tokens is None:
            return True
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and auth[7:] in self.api.tokens:
            return True
        self.send_json(401, status(401, "Unauthorized", "Unauthorized"))
        return False

    def forbidden(self, res, ns, verb):
        if (res[2], verb) not in self.api.forbidden and self.api.rbac_allows(res, verb):
            self.api.note_verb(res, verb, True)
            return False
        self.api.note_verb(res, verb, False)
        self.send_json(403, status(
            403, "Forbidden",
            '%s%s is forbidden: User "system:serviceaccount:%s:kepp" cannot %s resource "%s" '
            'in API group "%s" in the namespace "%s"'
            % (res[2], "." + res[0] if res[0] else "", ns, verb, res[2], res[0], ns),
            {"group": res[0], "kind": res[2]}))
        return True

    def not_found(self, res, name):
        self.send_json(404, status(404, "NotFound", '%s%s "%s" not found'
                                   % (res[2], "." + res[0] if res[0] else "", name),
                                   {"name": name, "group": res[0], "kind": res[2]}))

    def handle_one(self, method):
        self.api.log(method, self.path)
        if not self.authorized():
            return
        r = self.route()
        if r is None:
            return
        res, ns, name, q = r
        if method == "GET" and name is None:
            watch = q.get("watch") in ("1", "true")
            if not self.forbidden(res, ns, "watch" if watch else "list"):
                (self.watch if watch else self.list)(res, ns, q)
        elif method == "GET":
            if not self.forbidden(res, ns, "get"):
                obj = self.api.store.objects.get((res, ns, name))
                if obj is None:
                    self.not_found(res, name)
                else:
                    self.send_json(200, obj)
        elif method == "POST" and name is None:
            if not self.forbidden(res, ns, "create"):
                obj = self.read_body()
                obj.setdefault("metadata", {})["namespace"] = ns
                made = self.api.store.create(obj)
                if made is None:
                    self.send_json(409, status(409, "AlreadyExists", '%s.%s "%s" already exists'
                                               % (res[2], res[0], obj["metadata"]["name"]),
                                               {"name": obj["metadata"]["name"], "group": res[0], "kind": res[2]}))
                else:
                    self.send_json(201, made)
        elif method == "PUT" and name is not None:
            if not self.forbidden(res, ns, "update"):
                obj = self.read_body()
                obj.setdefault("metadata", {})["namespace"] = ns
                got = self.api.store.update(obj, check_rv=True)
                if got is None:
                    self.not_found(res, name)
                elif got == "conflict":
                    self.send_json(409, status(
                        409, "Conflict",
                        'Operation cannot be fulfilled on %s.%s "%s": the object has been modified; '
                        'please apply your changes to the latest version and try again'
                        % (res[2], res[0], name), {"name": name, "group": res[0], "kind": res[2]}))
                else:
                    self.send_json(200, got)
        elif method == "DELETE" and name is not None:
            if not self.forbidden(res, ns, "delete"):
                gone = self.api.store.delete(res, ns, name)
                if gone is None:
                    self.not_found(res, name)
                else:
                    self.send_json(200, gone)
        else:
            self.send_json(405, status(405, "MethodNotAllowed", "the server does not allow this method on the requested resource"))

    def do_GET(self):
        self.handle_one("GET")

    def do_POST(self):
        self.handle_one("POST")

    def do_PUT(self):
        self.handle_one("PUT")

    def do_DELETE(self):
        self.handle_one("DELETE")

    # -- list --

    def selectors(self, q):
        try:
            return parse_label_selector(q.get("labelSelector")), parse_field_selector(q.get("fieldSelector"))
        except ValueError as e:
            self.send_json(400, status(400, "BadRequest", "unable to parse requirement: %s" % e))
            return None

    def list(self, res, ns, q):
        sel = self.selectors(q)
        if sel is None:
            return
        lsel, fsel = sel
        store = self.api.store
        limit = int(q.get("limit") or 0)
        if self.api.page_limit and (not limit or limit > self.api.page_limit):
            limit = self.api.page_limit
        with store.cond:
            cont = q.get("continue")
            if cont:
                try:
                    tok = json.loads(base64.b64decode(cont))
                    list_rv, start = int(tok["rv"]), tok["start"]
                except (ValueError, KeyError):
                    self.send_json(400, status(400, "BadRequest", "continue key is not valid"))
                    return
                if list_rv < store.compacted or self.api.take_expire_continue():
                    self.send_json(410, status(
                        410, "Expired",
                        "The provided continue parameter is too old to display a consistent list "
                        "result. You can start a new list without the continue parameter, or use the "
                        "continue token in this response to retrieve the remainder of the results. "
                        "Continuing with the provided token results in an inconsistent list - objects "
                        "that were created, modified, or deleted between the time the first chunk was "
                        "returned and now may show up in the list."))
                    return
                objs = store.state_at(res, ns, list_rv)
            else:
                rv = q.get("resourceVersion", "")
                if q.get("resourceVersionMatch") == "Exact" and rv and int(rv) < store.compacted:
                    self.send_json(410, status(410, "Expired", "too old resource version: %s (%d)"
                                               % (rv, store.compacted)))
                    return
                list_rv, start = store.rv, ""
                objs = {k[2]: v for k, v in store.objects.items() if k[0] == res and k[1] == ns}
            names = sorted(n for n in objs if n >= start)
            items = []
            more = None
            for n in names:
                o = objs[n]
                if not (labels_match(lsel, o["metadata"].get("labels")) and fields_match(fsel, o)):
                    continue
                if limit and len(items) == limit:
                    more = n
                    break
                items.append(copy.deepcopy(o))
        if res[0] in BUILTIN:
            for o in items:
                o.pop("apiVersion", None)
                o.pop("kind", None)
        md = {"resourceVersion": str(list_rv)}
        if more is not None:
            md["continue"] = base64.b64encode(json.dumps({"rv": list_rv, "start": more}).encode()).decode()
        self.send_json(200, {"kind": RESOURCES[res] + "List", "apiVersion": api_version(res[0], res[1]),
                             "metadata": md, "items": items})

    # -- watch --

    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def event(self, typ, obj):
        self.chunk(json.dumps({"type": typ, "object": obj}, separators=(",", ":")).encode() + b"\n")

    def watch(self, res, ns, q):
        sel = self.selectors(q)
        if sel is None:
            return
        lsel, fsel = sel
        api = self.api
        conn = api.watch_opened(self, res)
        try:
            api.wait_hold(conn)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            self.stream(res, ns, q, lsel, fsel, conn)
        except (OSError, ValueError, ssl.SSLError, AttributeError):
            self.close_connection = True  # cut by the test or by the client
        finally:
            api.watch_closed(conn)

    def stream(self, res, ns, q, lsel, fsel, conn):
        api, store = self.api, self.api.store
        timeout = int(q.get("timeoutSeconds") or 1800)
        deadline = time.time() + timeout
        bookmarks = q.get("allowWatchBookmarks") in ("1", "true")
        rv = q.get("resourceVersion", "")

        def passes(o):
            return o is not None and o["metadata"]["namespace"] == ns and \
                labels_match(lsel, o["metadata"].get("labels")) and fields_match(fsel, o)

        with store.cond:
            if rv not in ("", "0") and int(rv) < store.compacted:
                self.event("ERROR", status(410, "Expired", "too old resource version: %s (%d)"
                                           % (rv, store.compacted)))
                self.chunk(b"")
                return
            if rv in ("", "0"):
                # Synthetic ADDED events for the current state, as the server does.
                initial = [copy.deepcopy(o) for k, o in sorted(store.objects.items())
                           if k[0] == res and passes(o)]
                start_rv = store.rv
            else:
                initial, start_rv = [], int(rv)
            idx = bisect.bisect_right(store.history_rvs, start_rv)
        for o in initial:
            self.event("ADDED", o)
        last_sent = time.time()
        while True:
            with store.cond:
                pending = store.history[idx:]
                idx = len(store.history)
                cur_rv = store.rv
                if not pending and not conn["stalled"]:
                    store.cond.wait(0.1)
            if conn["cut"]:
                raise OSError("cut")
            if conn["stalled"]:
                time.sleep(0.05)
                continue
            for erv, eres, typ, old, new in pending:
                if eres != res:
                    continue
                was, now = passes(old), passes(new)
                if typ == "DELETED" and was:
                    self.event("DELETED", new)
                elif typ != "DELETED" and now:
                    self.event("MODIFIED" if was else "ADDED", new)
                elif typ == "MODIFIED" and was and not now:
                    gone = copy.deepcopy(old)
                    gone["metadata"]["resourceVersion"] = new["metadata"]["resourceVersion"]
                    self.event("DELETED", gone)
                else:
                    continue
                last_sent = time.time()
            if time.time() >= deadline:
                self.chunk(b"")  # the clean end of a timed-out watch
                return
            if bookmarks and time.time() - last_sent >= api.bookmark_interval:
                self.event("BOOKMARK", {"kind": RESOURCES[res], "apiVersion": api_version(res[0], res[1]),
                                        "metadata": {"resourceVersion": str(cur_rv), "creationTimestamp": None}})
                last_sent = time.time()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def get_request(self):
        sock, addr = self.socket.accept()
        if self.ssl_ctx is not None:
            # The handshake happens in the handler's thread (first read).
            sock = self.ssl_ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr


def make_certs(folder):
    """A CA and a server certificate for 127.0.0.1/localhost (openssl CLI)."""
    def run(*args):
        subprocess.run(["openssl"] + list(args), check=True, capture_output=True, cwd=folder)
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=fake-apiserver-ca")
    run("req", *key, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    with open(os.path.join(folder, "san.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "san.ext")
    return os.path.join(folder, "ca.crt"), os.path.join(folder, "server.crt"), os.path.join(folder, "server.key")


class FakeAPIServer:
    """The server and its control surface. Use as a context manager."""

    def __init__(self, tls=True, token="kepp-test-token", port=0, bookmark_interval=60.0):
        self.store = Store()
        self.tokens = None if token is None else {token}
        self.token = token
        self.forbidden = set()     # (plural, verb)
        self.uninstalled = set()   # resources answering 404
        self.page_limit = 0        # caps ?limit (0: none) to force chunked lists
        self.bookmark_interval = bookmark_interval
        self.requests = []         # (time, method, path)
        self.rules = None          # RBAC rules to enforce (None: allow all)
        self.used = set()          # (group, plural, verb) allowed and served
        self.denied = []           # (group, plural, verb) refused with 403
        self._lock = threading.Lock()
        self._watches = []
        self._hold = threading.Event()
        self._hold.set()
        self._expire_continue = 0
        self.tmp = tempfile.mkdtemp(prefix="fake-apiserver-")
        self.httpd = Server(("127.0.0.1", port), Handler)
        self.httpd.api = self
        self.httpd.ssl_ctx = None
        self.ca = None
        if tls:
            self.ca, crt, key = make_certs(self.tmp)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(crt, key)
            self.httpd.ssl_ctx = ctx
        self.port = self.httpd.server_address[1]
        self.url = "%s://127.0.0.1:%d" % ("https" if tls else "http", self.port)
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        self._hold.set()
        self.cut_watches()
        self.httpd.shutdown()
        self.httpd.server_close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- client configuration --

    def kubeconfig(self, path, token=None, token_file=None, namespace="default"):
        user = {"tokenFile": token_file} if token_file else {"token": token or self.token}
        cluster = {"server": self.url}
        if self.ca:
            cluster["certificate-authority"] = self.ca
        cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "test",
               "clusters": [{"name": "fake", "cluster": cluster}],
               "users": [{"name": "kepp", "user": user}],
               "contexts": [{"name": "test", "context": {"cluster": "fake", "user": "kepp",
                                                          "namespace": namespace}}]}
        with open(path, "w") as f:
            json.dump(cfg, f, indent=1)  # JSON is YAML
        return path

    def set_tokens(self, *tokens):
        """Only these bearer tokens are accepted from now on (rotation)."""
        self.tokens = set(tokens)

    # -- objects --

    def create(self, obj):
        made = self.store.create(obj)
        if made is None:
            raise KeyError("already exists: %s" % obj["metadata"]["name"])
        return made

    def update(self, obj):
        got = self.store.update(obj)
        if got is None:
            raise KeyError("not found: %s" % obj["metadata"]["name"])
        return got

    def apply(self, obj):
        res = resource_of(obj)
        key = (res, obj["metadata"].get("namespace", "default"), obj["metadata"]["name"])
        return self.update(obj) if key in self.store.objects else self.create(obj)

    def get(self, kind_obj_or_res, name, ns="default"):
        res = kind_obj_or_res if isinstance(kind_obj_or_res, tuple) else resource_of(kind_obj_or_res)
        o = self.store.objects.get((res, ns, name))
        return copy.deepcopy(o) if o else None

    def patch(self, obj, fn):
        """Applies fn to a copy of the stored |obj| and writes it back."""
        cur = self.get(obj, obj["metadata"]["name"], obj["metadata"].get("namespace", "default"))
        fn(cur)
        return self.update(cur)

    def delete(self, obj):
        return self.store.delete(resource_of(obj), obj["metadata"].get("namespace", "default"),
                                 obj["metadata"]["name"])

    # -- faults --

    def compact(self):
        """Every resourceVersion up to now expires (410 Gone afterwards)."""
        with self.store.cond:
            self.store.compacted = self.store.rv

    def forbid(self, plural, verbs=("get", "list", "watch")):
        for v in verbs:
            self.forbidden.add((plural, v))

    def enforce_rbac(self, rules):
        """Only what these Role rules grant is allowed (403 otherwise)."""
        self.rules = rules

    def rbac_allows(self, res, verb):
        if self.rules is None:
            return True
        return any(res[0] in r.get("apiGroups", []) and res[2] in r.get("resources", [])
                   and verb in r.get("verbs", []) for r in self.rules)

    def note_verb(self, res, verb, allowed):
        with self._lock:
            if allowed:
                self.used.add((res[0], res[2], verb))
            else:
                self.denied.append((res[0], res[2], verb))

    def allow(self, plural):
        self.forbidden = {(p, v) for p, v in self.forbidden if p != plural}

    def uninstall(self, res):
        self.uninstalled.add(res)

    def install(self, res):
        self.uninstalled.discard(res)

    def expire_next_continue(self, n=1):
        """The next |n| list requests with a continue token get 410."""
        with self._lock:
            self._expire_continue += n

    def take_expire_continue(self):
        with self._lock:
            if self._expire_continue:
                self._expire_continue -= 1
                return True
            return False

    # -- watches --

    def watch_opened(self, handler, res):
        conn = {"handler": handler, "res": res, "cut": False, "stalled": False}
        with self._lock:
            self._watches.append(conn)
        return conn

    def watch_closed(self, conn):
        with self._lock:
            if conn in self._watches:
                self._watches.remove(conn)

    def watches(self, plural=None):
        with self._lock:
            return len([c for c in self._watches if plural is None or c["res"][2] == plural])

    def wait_hold(self, conn):
        while not self._hold.wait(0.05):
            if conn["cut"]:
                raise OSError("cut")

    def hold_watches(self):
        """New watch requests wait (no answer) until release_watches()."""
        self._hold.clear()

    def release_watches(self):
        self._hold.set()

    def cut_watches(self, plural=None):
        """Drops open watch connections mid-stream (no final chunk)."""
        with self._lock:
            conns = [c for c in self._watches if plural is None or c["res"][2] == plural]
        for c in conns:
            c["cut"] = True
            try:
                socket.socket.shutdown(c["handler"].connection, socket.SHUT_RDWR)
            except OSError:
                pass

    def stall_watches(self, plural=None):
        """Open watches stop sending anything, bookmarks included; new ones
        work."""
        with self._lock:
            for c in self._watches:
                if plural is None or c["res"][2] == plural:
                    c["stalled"] = True

    # -- request log --

    def log(self, method, path):
        with self._lock:
            self.requests.append((time.time(), method, path))

    def count(self, method="GET", contains="", since=0.0, watch=None):
        with self._lock:
            out = 0
            for t, m, p in self.requests:
                if t < since or m != method or contains not in p:
                    continue
                if watch is not None and (("watch=1" in p) != watch):
                    continue
                out += 1
            return out


# ---- object builders ----------------------------------------------------------

def pod(name, ip, labels, ready=True, annotations=None, ns="default", terminating=False):
    p = {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": name, "namespace": ns, "labels": dict(labels)},
         "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:latest",
                                  "ports": [{"containerPort": 8000, "protocol": "TCP"}]}],
                  "nodeName": "node-1"},
         "status": {"phase": "Running", "hostIP": "10.0.0.1", "podIP": ip,
                    "podIPs": [{"ip": ip}] if ip else [],
                    "conditions": [
                        {"type": "Initialized", "status": "True"},
                        {"type": "Ready", "status": "True" if ready else "False"},
                        {"type": "ContainersReady", "status": "True" if ready else "False"},
                        {"type": "PodScheduled", "status": "True"}]}}
    if annotations:
        p["metadata"]["annotations"] = dict(annotations)
    if terminating:
        p["metadata"]["deletionTimestamp"] = now_rfc3339()
    return p


def _metadata(name, ns, annotations):
    md = {"name": name, "namespace": ns}
    if annotations:
        md["annotations"] = dict(annotations)
    return md


def pool_v1(name, selector, ports, ns="default", annotations=None):
    return {"apiVersion": "inference.networking.k8s.io/v1", "kind": "InferencePool",
            "metadata": _metadata(name, ns, annotations),
            "spec": {"selector": {"matchLabels": dict(selector)},
                     "targetPorts": [{"number": p} for p in ports],
                     "endpointPickerRef": {"name": name + "-epp", "port": {"number": 9002}}},
            "status": {"parents": []}}


def pool_v1alpha2(name, selector, port, ns="default", annotations=None):
    return {"apiVersion": "inference.networking.x-k8s.io/v1alpha2", "kind": "InferencePool",
            "metadata": _metadata(name, ns, annotations),
            "spec": {"selector": dict(selector), "targetPortNumber": port,
                     "extensionRef": {"name": name + "-epp"}}}


def model(name, model_name, pool, criticality=None, ns="default",
          group="inference.networking.k8s.io"):
    """A v1alpha2 InferenceModel serving |model_name| on |pool|."""
    spec = {"modelName": model_name, "poolRef": {"group": group, "name": pool}}
    if criticality:
        spec["criticality"] = criticality
    return {"apiVersion": "inference.networking.x-k8s.io/v1alpha2", "kind": "InferenceModel",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def objective(name, priority, pool, ns="default", group="inference.networking.k8s.io"):
    return {"apiVersion": "inference.networking.x-k8s.io/v1alpha2", "kind": "InferenceObjective",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"priority": priority, "poolRef": {"group": group, "name": pool}}}


def rewrite(name, pool, rules, ns="default", group="inference.networking.k8s.io"):
    """rules: [(match_models or [], [(target, weight), ...]), ...]"""
    return {"apiVersion": "inference.networking.x-k8s.io/v1alpha2", "kind": "InferenceModelRewrite",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"poolRef": {"group": group, "name": pool},
                     "rules": [{"matches": [{"model": {"type": "Exact", "value": m}} for m in ms],
                                "targets": [{"modelRewrite": t, "weight": w} for t, w in ts]}
                               for ms, ts in rules]}}


def main():
    import argparse
    ap = argparse.ArgumentParser(description="fake Kubernetes API server")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--token", default="kepp-test-token")
    ap.add_argument("--kubeconfig", required=True, help="kubeconfig file to write")
    ap.add_argument("--bookmark-interval", type=float, default=60.0)
    ap.add_argument("objects", nargs="*", help="YAML or JSON files of objects to create")
    a = ap.parse_args()
    api = FakeAPIServer(port=a.port, token=a.token, bookmark_interval=a.bookmark_interval)
    for path in a.objects:
        import yaml
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    api.create(doc)
    shutil.copy(api.ca, a.kubeconfig + ".ca.crt")
    api.ca = a.kubeconfig + ".ca.crt"
    api.kubeconfig(a.kubeconfig)
    print("serving %s; kubeconfig %s" % (api.url, a.kubeconfig), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        api.close()


if __name__ == "__main__":
    main()
