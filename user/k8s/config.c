/* Where the API server is and how to authenticate: in-cluster (the service
 * account's files) or a kubeconfig, as client-go reads them. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "k8s/k8s.h"
#include "util/yaml.h"

#define KUBECONFIG_MAX_FILES 16

static int fail(char *err, size_t errlen, int r, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return r;
}

void k8s_config_free(k8s_config *c)
{
	char *v[] = {c->server,	  c->ca_file,	 c->ca_pem, c->cert_file,  c->key_file,
		     c->cert_pem, c->key_pem,	 c->token,  c->token_file, c->username,
		     c->password, c->namespace_, c->source};
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
		free(v[i]);
	memset(c, 0, sizeof(*c));
}

/* Reads a small text file whole (at most 1 MiB), trailing newlines cut when
 * |trim|. */
static char *read_small(const char *path, bool trim)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);
	while (buf) {
		size_t n = fread(buf + len, 1, cap - len - 1, f);
		len += n;
		if (n == 0)
			break;
		if (len + 1 == cap) {
			char *nb = cap < (1u << 20) ? realloc(buf, cap * 2) : NULL;
			if (!nb) {
				free(buf);
				buf = NULL;
				break;
			}
			buf = nb;
			cap *= 2;
		}
	}
	fclose(f);
	if (!buf)
		return NULL;
	buf[len] = '\0';
	while (trim && len && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' '))
		buf[--len] = '\0';
	return buf;
}

int k8s_config_in_cluster(const char *sa_dir, k8s_config *c, char *err, size_t errlen)
{
	const char *host = getenv("KUBERNETES_SERVICE_HOST");
	const char *port = getenv("KUBERNETES_SERVICE_PORT");
	char path[1024];
	memset(c, 0, sizeof(*c));
	if (!sa_dir)
		sa_dir = K8S_SA_DIR;
	if (!host || !*host || !port || !*port)
		return fail(err, errlen, -ENOENT,
			    "not in a cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT "
			    "are not set");
	bool v6 = strchr(host, ':') != NULL;
	if (asprintf(&c->server, "https://%s%s%s:%s", v6 ? "[" : "", host, v6 ? "]" : "", port) <
	    0) {
		c->server = NULL;
		return -ENOMEM;
	}
	snprintf(path, sizeof(path), "%s/token", sa_dir);
	char *tok = read_small(path, true);
	if (!tok || !*tok) {
		free(tok);
		k8s_config_free(c);
		return fail(err, errlen, -ENOENT,
			    "in-cluster: cannot read the service account token %s (is "
			    "automountServiceAccountToken off?)",
			    path);
	}
	c->token = tok;
	c->token_file = strdup(path);
	snprintf(path, sizeof(path), "%s/ca.crt", sa_dir);
	c->ca_file = strdup(path);
	snprintf(path, sizeof(path), "%s/namespace", sa_dir);
	c->namespace_ = read_small(path, true);
	c->source = strdup("in-cluster");
	if (!c->token_file || !c->ca_file || !c->source) {
		k8s_config_free(c);
		return -ENOMEM;
	}
	return 0;
}

/* ---- kubeconfig --------------------------------------------------------- */

static int b64val(int ch)
{
	if (ch >= 'A' && ch <= 'Z')
		return ch - 'A';
	if (ch >= 'a' && ch <= 'z')
		return ch - 'a' + 26;
	if (ch >= '0' && ch <= '9')
		return ch - '0' + 52;
	if (ch == '+')
		return 62;
	if (ch == '/')
		return 63;
	return -1;
}

/* Standard base64 (whitespace skipped, padding optional) into a
 * NUL-terminated malloc'd string; NULL when malformed. */
static char *b64_decode(const char *s)
{
	size_t n = strlen(s);
	char *out = malloc(n / 4 * 3 + 4), *o = out;
	if (!out)
		return NULL;
	unsigned acc = 0;
	int bits = 0;
	bool pad = false;
	for (const char *p = s; *p; p++) {
		if (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')
			continue;
		if (*p == '=') {
			pad = true;
			continue;
		}
		int v = b64val((unsigned char)*p);
		if (v < 0 || pad) {
			free(out);
			return NULL;
		}
		acc = (acc << 6) | (unsigned)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			*o++ = (char)((acc >> bits) & 0xff);
		}
	}
	*o = '\0';
	return out;
}

typedef struct kfile {
	char *path, *dir;
	cJSON *root;
} kfile;

/* The "name"d entry of list |list| ("clusters", "users", "contexts") in the
 * first file that has one; its inner object (|inner|) and that file. */
static const cJSON *lookup(const kfile *f, size_t n, const char *list, const char *inner,
			   const char *name, const kfile **from)
{
	for (size_t i = 0; i < n; i++) {
		const cJSON *e;
		cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(f[i].root, list)) {
			const char *nm = k8s_json_str(e, "name", NULL);
			if (nm && !strcmp(nm, name)) {
				*from = &f[i];
				const cJSON *in = k8s_json_get(e, inner, NULL);
				return cJSON_IsObject(in) ? in : NULL;
			}
		}
	}
	return NULL;
}

/* A path field, resolved against the folder of the file that holds it. */
static int get_path(const kfile *f, const cJSON *o, const char *key, char **out)
{
	const char *v = k8s_json_str(o, key, NULL);
	*out = NULL;
	if (!v || !*v)
		return 0;
	if (v[0] == '/' || !f->dir)
		*out = strdup(v);
	else if (asprintf(out, "%s/%s", f->dir, v) < 0)
		*out = NULL;
	return *out ? 0 : -ENOMEM;
}

static int get_data(const cJSON *o, const char *key, char **out, char *err, size_t errlen)
{
	const char *v = k8s_json_str(o, key, NULL);
	*out = NULL;
	if (!v || !*v)
		return 0;
	*out = b64_decode(v);
	if (!*out)
		return fail(err, errlen, -EINVAL, "kubeconfig: %s is not valid base64", key);
	return 0;
}

static int get_str(const cJSON *o, const char *key, char **out)
{
	const char *v = k8s_json_str(o, key, NULL);
	*out = v && *v ? strdup(v) : NULL;
	return v && *v && !*out ? -ENOMEM : 0;
}

static int load_kfile(const char *path, kfile *f, char *err, size_t errlen)
{
	yfile y;
	memset(f, 0, sizeof(*f));
	int r = yfile_load(path, 0, &y, err, errlen);
	if (r < 0)
		return r;
	yaml_node_t *root = y.n_docs ? ydoc_root(&y.docs[0]) : NULL;
	f->root = root ? yto_json(&y.docs[0], root, err, errlen) : cJSON_CreateObject();
	yfile_free(&y);
	if (!f->root)
		return -EINVAL;
	if (!cJSON_IsObject(f->root)) {
		cJSON_Delete(f->root);
		f->root = NULL;
		return fail(err, errlen, -EINVAL, "%s: a kubeconfig must be a mapping", path);
	}
	f->path = strdup(path);
	const char *slash = strrchr(path, '/');
	f->dir = slash ? strndup(path, (size_t)(slash - path) + (slash == path)) : NULL;
	return f->path && (!slash || f->dir) ? 0 : -ENOMEM;
}

static void free_kfiles(kfile *f, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		cJSON_Delete(f[i].root);
		free(f[i].path);
		free(f[i].dir);
	}
}

static int fill_from(const kfile *files, size_t nf, const char *ctx_name, k8s_config *c, char *err,
		     size_t errlen)
{
	const kfile *cf = NULL, *uf = NULL, *xf = NULL;
	const cJSON *ctx = lookup(files, nf, "contexts", "context", ctx_name, &xf);
	if (!ctx)
		return fail(err, errlen, -ENOENT, "kubeconfig: no context \"%s\"", ctx_name);
	const char *cluster_name = k8s_json_str(ctx, "cluster", NULL);
	const char *user_name = k8s_json_str(ctx, "user", NULL);
	const cJSON *cl =
		cluster_name ? lookup(files, nf, "clusters", "cluster", cluster_name, &cf) : NULL;
	if (!cl)
		return fail(err, errlen, -ENOENT,
			    "kubeconfig: context \"%s\" names no known cluster", ctx_name);
	const cJSON *u =
		user_name && *user_name ? lookup(files, nf, "users", "user", user_name, &uf) : NULL;
	int r;
	if ((r = get_str(cl, "server", &c->server)) < 0 ||
	    (r = get_path(cf, cl, "certificate-authority", &c->ca_file)) < 0 ||
	    (r = get_data(cl, "certificate-authority-data", &c->ca_pem, err, errlen)) < 0 ||
	    (r = get_str(ctx, "namespace", &c->namespace_)) < 0)
		return r;
	if (!c->server)
		return fail(err, errlen, -EINVAL, "kubeconfig: cluster \"%s\" has no server",
			    cluster_name);
	size_t sl = strlen(c->server);
	while (sl > 1 && c->server[sl - 1] == '/')
		c->server[--sl] = '\0';
	c->insecure = cJSON_IsTrue(k8s_json_get(cl, "insecure-skip-tls-verify", NULL));
	if (!u)
		return 0;
	if (k8s_json_get(u, "exec", NULL) || k8s_json_get(u, "auth-provider", NULL))
		return fail(err, errlen, -ENOTSUP,
			    "kubeconfig: user \"%s\" gets credentials from an exec plugin or auth "
			    "provider, which kepp does not run; give it a token, tokenFile or a "
			    "client certificate",
			    user_name);
	if ((r = get_str(u, "token", &c->token)) < 0 ||
	    (r = get_path(uf, u, "tokenFile", &c->token_file)) < 0 ||
	    (r = get_path(uf, u, "client-certificate", &c->cert_file)) < 0 ||
	    (r = get_path(uf, u, "client-key", &c->key_file)) < 0 ||
	    (r = get_data(u, "client-certificate-data", &c->cert_pem, err, errlen)) < 0 ||
	    (r = get_data(u, "client-key-data", &c->key_pem, err, errlen)) < 0 ||
	    (r = get_str(u, "username", &c->username)) < 0 ||
	    (r = get_str(u, "password", &c->password)) < 0)
		return r;
	if ((c->cert_file || c->cert_pem) != (c->key_file || c->key_pem))
		return fail(err, errlen, -EINVAL,
			    "kubeconfig: user \"%s\" has a client certificate without a key or a "
			    "key without a certificate",
			    user_name);
	/* A static token wins over tokenFile, as in client-go. */
	if (!c->token && c->token_file) {
		c->token = read_small(c->token_file, true);
		if (!c->token)
			return fail(err, errlen, -ENOENT, "kubeconfig: cannot read tokenFile %s",
				    c->token_file);
	}
	return 0;
}

int k8s_config_kubeconfig(const char *paths, const char *context, k8s_config *c, char *err,
			  size_t errlen)
{
	kfile files[KUBECONFIG_MAX_FILES];
	size_t nf = 0;
	int r = 0;
	memset(c, 0, sizeof(*c));
	char *list = strdup(paths), *save = NULL;
	if (!list)
		return -ENOMEM;
	for (char *p = strtok_r(list, ":", &save); p && r == 0; p = strtok_r(NULL, ":", &save)) {
		struct stat st;
		if (stat(p, &st) < 0)
			continue; /* kubectl skips missing files of KUBECONFIG */
		if (nf == KUBECONFIG_MAX_FILES) {
			r = fail(err, errlen, -E2BIG, "kubeconfig: more than %d files",
				 KUBECONFIG_MAX_FILES);
			break;
		}
		r = load_kfile(p, &files[nf], err, errlen);
		if (r == 0)
			nf++;
	}
	free(list);
	if (r == 0 && nf == 0)
		r = fail(err, errlen, -ENOENT, "kubeconfig: no such file %s", paths);
	const char *ctx = context && *context ? context : NULL;
	for (size_t i = 0; r == 0 && !ctx && i < nf; i++) {
		const char *cc = k8s_json_str(files[i].root, "current-context", NULL);
		if (cc && *cc)
			ctx = cc;
	}
	if (r == 0 && !ctx)
		r = fail(err, errlen, -ENOENT, "kubeconfig %s: no current-context", paths);
	if (r == 0)
		r = fill_from(files, nf, ctx, c, err, errlen);
	if (r == 0 && !(c->source = strdup(files[0].path)))
		r = -ENOMEM;
	free_kfiles(files, nf);
	if (r < 0) {
		if (r == -ENOMEM)
			snprintf(err, errlen, "kubeconfig: out of memory");
		k8s_config_free(c);
	}
	return r;
}

int k8s_config_load(const char *kubeconfig, k8s_config *c, char *err, size_t errlen)
{
	if (kubeconfig && *kubeconfig)
		return k8s_config_kubeconfig(kubeconfig, NULL, c, err, errlen);
	const char *env = getenv("KUBECONFIG");
	if (env && *env)
		return k8s_config_kubeconfig(env, NULL, c, err, errlen);
	if (getenv("KUBERNETES_SERVICE_HOST"))
		return k8s_config_in_cluster(NULL, c, err, errlen);
	const char *home = getenv("HOME");
	char path[1024];
	snprintf(path, sizeof(path), "%s/.kube/config", home ? home : "");
	struct stat st;
	if (!home || stat(path, &st) < 0)
		return fail(err, errlen, -ENOENT,
			    "no Kubernetes API configuration: not in a cluster "
			    "(KUBERNETES_SERVICE_HOST unset), no --kubeconfig, no $KUBECONFIG and "
			    "no ~/.kube/config");
	return k8s_config_kubeconfig(path, NULL, c, err, errlen);
}
