/* HTTP to the API server: libcurl multi driven by the control thread's
 * event_base (curl_multi_socket_action with socket and timer callbacks, as
 * the metrics scraper does). Streams are split into lines for watches. The
 * bearer token is read again whenever its file changes (projected service
 * account tokens rotate hourly). */
#include <curl/curl.h>
#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util/curlev.h"
#include "k8s/k8s.h"
#include "util/log.h"

#define MAX_BODY	   (128u << 20) /* a list page or an error answer */
#define MAX_LINE	   (32u << 20)	/* one watch event */
#define CONNECT_TIMEOUT_MS 10000L
#define USER_AGENT	   "kepp/0.1.0"

struct k8s_req {
	k8s_client *c;
	CURL *easy;
	struct curl_slist *hdrs;
	k8s_req_opts o;
	char *buf; /* body, or the partial line of a stream */
	size_t len, cap;
	bool checked, streaming, aborted, too_big;
	char errbuf[CURL_ERROR_SIZE];
	struct k8s_req *prev, *next;
};

struct k8s_client {
	struct event_base *base;
	curlev ce;
	k8s_req reqs; /* list head of requests in flight */
	k8s_config cfg;
	/* The token file as last read, to notice rotation. */
	struct timespec tok_mtime;
	ino_t tok_ino;
	off_t tok_size;
};

static void check_done(k8s_client *c);

static void on_progress(void *ctx)
{
	check_done(ctx);
}

static bool append(k8s_req *r, const char *data, size_t n, size_t max)
{
	if (n > max - r->len) {
		r->too_big = true;
		return false;
	}
	if (r->len + n + 1 > r->cap) {
		size_t cap = r->cap ? r->cap : 16384;
		while (cap < r->len + n + 1)
			cap *= 2;
		char *nb = realloc(r->buf, cap);
		if (!nb)
			return false;
		r->buf = nb;
		r->cap = cap;
	}
	memcpy(r->buf + r->len, data, n);
	r->len += n;
	r->buf[r->len] = '\0';
	return true;
}

static size_t write_cb(char *data, size_t sz, size_t nmemb, void *userp)
{
	k8s_req *r = userp;
	size_t n = sz * nmemb;
	if (!r->checked) {
		long code = 0;
		curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
		/* Errors come as one Status object, not as events. */
		r->streaming = r->o.on_line && code == 200;
		r->checked = true;
	}
	if (!r->streaming)
		return append(r, data, n, MAX_BODY) ? n : 0;
	for (size_t off = 0; off < n;) {
		char *nl = memchr(data + off, '\n', n - off);
		size_t take = nl ? (size_t)(nl - (data + off)) : n - off;
		if (!append(r, data + off, take, MAX_LINE))
			return 0;
		off += take;
		if (!nl)
			break;
		off++;
		if (r->len && r->o.on_line(r->o.ctx, r->buf, r->len) < 0) {
			r->aborted = true;
			return 0;
		}
		r->len = 0;
	}
	return n;
}

static void req_free(k8s_req *r)
{
	if (r->easy)
		curl_easy_cleanup(r->easy);
	curl_slist_free_all(r->hdrs);
	free(r->buf);
	free(r);
}

static void unlink_req(k8s_req *r)
{
	r->prev->next = r->next;
	r->next->prev = r->prev;
}

static void check_done(k8s_client *c)
{
	CURLMsg *msg;
	int left;
	while ((msg = curl_multi_info_read(c->ce.multi, &left))) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		k8s_req *r = NULL;
		CURLcode res = msg->data.result;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
		curl_multi_remove_handle(c->ce.multi, msg->easy_handle);
		unlink_req(r);
		k8s_result out = {.aborted = r->aborted};
		curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &out.status);
		if (res != CURLE_OK) {
			if (r->too_big)
				snprintf(r->errbuf, sizeof(r->errbuf), "answer over %u bytes",
					 r->streaming ? MAX_LINE : MAX_BODY);
			else if (!r->errbuf[0])
				snprintf(r->errbuf, sizeof(r->errbuf), "%s",
					 curl_easy_strerror(res));
			out.error = r->errbuf;
		}
		if (!r->streaming) {
			out.body = r->buf ? r->buf : "";
			out.len = r->len;
		}
		if (r->o.on_done)
			r->o.on_done(r->o.ctx, &out);
		req_free(r);
	}
}

/* Reads the token file again when it changed since the last read. */
static void refresh_token(k8s_client *c)
{
	struct stat st;
	if (!c->cfg.token_file || stat(c->cfg.token_file, &st) < 0)
		return;
	if (st.st_ino == c->tok_ino && st.st_size == c->tok_size &&
	    st.st_mtim.tv_sec == c->tok_mtime.tv_sec && st.st_mtim.tv_nsec == c->tok_mtime.tv_nsec)
		return;
	FILE *f = fopen(c->cfg.token_file, "rb");
	char buf[16384];
	size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
	if (f)
		fclose(f);
	while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
		n--;
	buf[n] = '\0';
	if (!n)
		return; /* mid-rotation: keep the old one and look again next time */
	char *tok = strdup(buf);
	if (!tok)
		return;
	bool first = c->tok_ino == 0;
	free(c->cfg.token);
	c->cfg.token = tok;
	c->tok_ino = st.st_ino;
	c->tok_size = st.st_size;
	c->tok_mtime = st.st_mtim;
	if (!first)
		ulog(LOG_VERBOSE, "Kubernetes API token re-read", "file", c->cfg.token_file, NULL);
}

static int setup_easy(k8s_client *c, CURL *e, const char *method, const char *path,
		      const char *body, struct curl_slist **hdrs)
{
	char url[8192];
	if ((size_t)snprintf(url, sizeof(url), "%s%s", c->cfg.server, path) >= sizeof(url))
		return -ENAMETOOLONG;
	refresh_token(c);
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_USERAGENT, USER_AGENT);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPIDLE, 30L);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPINTVL, 15L);
	curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
	if (c->cfg.ca_file)
		curl_easy_setopt(e, CURLOPT_CAINFO, c->cfg.ca_file);
	if (c->cfg.ca_pem) {
		struct curl_blob b = {c->cfg.ca_pem, strlen(c->cfg.ca_pem), CURL_BLOB_COPY};
		curl_easy_setopt(e, CURLOPT_CAINFO_BLOB, &b);
	}
	if (c->cfg.cert_file)
		curl_easy_setopt(e, CURLOPT_SSLCERT, c->cfg.cert_file);
	if (c->cfg.cert_pem) {
		struct curl_blob b = {c->cfg.cert_pem, strlen(c->cfg.cert_pem), CURL_BLOB_COPY};
		curl_easy_setopt(e, CURLOPT_SSLCERT_BLOB, &b);
		curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM");
	}
	if (c->cfg.key_file)
		curl_easy_setopt(e, CURLOPT_SSLKEY, c->cfg.key_file);
	if (c->cfg.key_pem) {
		struct curl_blob b = {c->cfg.key_pem, strlen(c->cfg.key_pem), CURL_BLOB_COPY};
		curl_easy_setopt(e, CURLOPT_SSLKEY_BLOB, &b);
		curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM");
	}
	if (c->cfg.insecure) {
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	if (c->cfg.username) {
		curl_easy_setopt(e, CURLOPT_USERNAME, c->cfg.username);
		curl_easy_setopt(e, CURLOPT_PASSWORD, c->cfg.password ? c->cfg.password : "");
	}
	struct curl_slist *h = curl_slist_append(NULL, "Accept: application/json");
	if (h && body)
		h = curl_slist_append(h, "Content-Type: application/json") ? h : NULL;
	if (h && c->cfg.token) {
		char *auth;
		if (asprintf(&auth, "Authorization: Bearer %s", c->cfg.token) < 0)
			auth = NULL;
		if (!auth || !curl_slist_append(h, auth)) {
			curl_slist_free_all(h);
			h = NULL;
		}
		free(auth);
	}
	if (!h)
		return -ENOMEM;
	*hdrs = h;
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
	if (method && strcmp(method, "GET"))
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
	if (body) {
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
		curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, body);
	}
	return 0;
}

k8s_req *k8s_request(k8s_client *c, const k8s_req_opts *o)
{
	k8s_req *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->c = c;
	r->o = *o;
	r->easy = curl_easy_init();
	if (!r->easy || setup_easy(c, r->easy, o->method, o->path, o->body, &r->hdrs) < 0) {
		req_free(r);
		return NULL;
	}
	curl_easy_setopt(r->easy, CURLOPT_PRIVATE, (char *)r);
	curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(r->easy, CURLOPT_ERRORBUFFER, r->errbuf);
	if (o->timeout_ms > 0)
		curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS, (long)o->timeout_ms);
	if (o->idle_ms > 0) {
		curl_easy_setopt(r->easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
		curl_easy_setopt(r->easy, CURLOPT_LOW_SPEED_TIME,
				 (long)((o->idle_ms + 999) / 1000));
	}
	if (curl_multi_add_handle(c->ce.multi, r->easy) != CURLM_OK) {
		req_free(r);
		return NULL;
	}
	r->next = c->reqs.next;
	r->prev = &c->reqs;
	r->next->prev = r;
	c->reqs.next = r;
	return r;
}

void k8s_req_cancel(k8s_req *r)
{
	if (!r)
		return;
	curl_multi_remove_handle(r->c->ce.multi, r->easy);
	unlink_req(r);
	req_free(r);
}

static size_t discard_cb(char *data, size_t sz, size_t nmemb, void *userp) { return sz * nmemb; }

long k8s_request_sync(k8s_client *c, const char *method, const char *path, const char *body,
		      int64_t timeout_ms)
{
	struct curl_slist *hdrs = NULL;
	CURL *e = curl_easy_init();
	long code = -ENOMEM;
	if (e && setup_easy(c, e, method, path, body, &hdrs) == 0) {
		curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard_cb);
		curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
		curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms);
		code = -EIO;
		if (curl_easy_perform(e) == CURLE_OK)
			curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
	}
	curl_slist_free_all(hdrs);
	if (e)
		curl_easy_cleanup(e);
	return code;
}

static char *dup_opt(const char *s, bool *oom)
{
	char *d = s ? strdup(s) : NULL;
	if (s && !d)
		*oom = true;
	return d;
}

k8s_client *k8s_client_new(struct event_base *base, const k8s_config *cfg, char *err, size_t errlen)
{
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		snprintf(err, errlen, "libcurl initialisation failed");
		return NULL;
	}
	k8s_client *c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	bool oom = false;
	c->base = base;
	c->reqs.next = c->reqs.prev = &c->reqs;
	c->cfg = (k8s_config){
		.server = dup_opt(cfg->server, &oom),
		.ca_file = dup_opt(cfg->ca_file, &oom),
		.ca_pem = dup_opt(cfg->ca_pem, &oom),
		.cert_file = dup_opt(cfg->cert_file, &oom),
		.key_file = dup_opt(cfg->key_file, &oom),
		.cert_pem = dup_opt(cfg->cert_pem, &oom),
		.key_pem = dup_opt(cfg->key_pem, &oom),
		.token = dup_opt(cfg->token, &oom),
		.token_file = dup_opt(cfg->token_file, &oom),
		.username = dup_opt(cfg->username, &oom),
		.password = dup_opt(cfg->password, &oom),
		.insecure = cfg->insecure,
		.namespace_ = dup_opt(cfg->namespace_, &oom),
		.source = dup_opt(cfg->source, &oom),
	};
	if (curlev_init(&c->ce, base, on_progress, c) < 0 || oom || !c->cfg.server) {
		snprintf(err, errlen, c->cfg.server || oom ? "out of memory" : "no API server");
		k8s_client_free(c);
		return NULL;
	}
	return c;
}

void k8s_client_free(k8s_client *c)
{
	if (!c)
		return;
	while (c->reqs.next != &c->reqs)
		k8s_req_cancel(c->reqs.next);
	curlev_free(&c->ce);
	k8s_config_free(&c->cfg);
	free(c);
}

const char *k8s_client_namespace(const k8s_client *c) { return c->cfg.namespace_; }
