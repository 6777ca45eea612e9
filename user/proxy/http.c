/* Bounded HTTP/1.1 parsing (RFC 9112): request and response heads, and the
 * chunked transfer coding. Strict where leniency lets two parsers disagree
 * about where a message ends (request smuggling): CRLF line ends only, no
 * obs-fold, no whitespace before a header's colon, one Content-Length
 * value, no Content-Length with Transfer-Encoding in a request. */
#include <errno.h>
#include <string.h>
#include <strings.h>

#include "proxy/proxy_int.h"

/* RFC 9110 tchar. */
static bool is_tchar(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return true;
	if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')
		return true;
	return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool is_hex(unsigned char c, unsigned *v)
{
	if (c >= '0' && c <= '9')
		*v = c - '0';
	else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
		*v = (c | 0x20) - 'a' + 10;
	else
		return false;
	return true;
}

/* One line of |buf| from |*pos|: its bytes without CRLF. -EINVAL on a bare CR
 * or LF, or when no CRLF follows. */
static int next_line(const char *buf, size_t len, size_t *pos, const char **line, size_t *llen)
{
	size_t s = *pos;
	for (size_t i = s; i + 1 < len; i++) {
		if (buf[i] == '\r') {
			if (buf[i + 1] != '\n')
				return -EINVAL;
			*line = buf + s;
			*llen = i - s;
			*pos = i + 2;
			return 0;
		}
		if (buf[i] == '\n')
			return -EINVAL;
	}
	return -EINVAL;
}

static bool eq_ci(const char *p, size_t n, const char *lit)
{
	return strlen(lit) == n && strncasecmp(p, lit, n) == 0;
}

/* Calls |fn| on every comma-separated, blank-trimmed, non-empty element. */
static void each_token(const char *p, size_t n, void (*fn)(void *, const char *, size_t), void *ctx)
{
	size_t i = 0;
	while (i < n) {
		size_t s = i;
		while (i < n && p[i] != ',')
			i++;
		size_t e = i;
		while (s < e && (p[s] == ' ' || p[s] == '\t'))
			s++;
		while (e > s && (p[e - 1] == ' ' || p[e - 1] == '\t'))
			e--;
		if (e > s)
			fn(ctx, p + s, e - s);
		i++;
	}
}

typedef struct te_state {
	unsigned n;
	bool last_chunked, other;
} te_state;

static void te_token(void *ctx, const char *p, size_t n)
{
	te_state *t = ctx;
	t->n++;
	t->last_chunked = eq_ci(p, n, "chunked");
	if (!t->last_chunked)
		t->other = true;
}

typedef struct conn_state {
	bool close, keep_alive;
} conn_state;

static void conn_token(void *ctx, const char *p, size_t n)
{
	conn_state *c = ctx;
	if (eq_ci(p, n, "close"))
		c->close = true;
	else if (eq_ci(p, n, "keep-alive"))
		c->keep_alive = true;
}

/* The header lines after the start line, and the framing they imply. */
static int parse_fields(const char *buf, size_t len, size_t pos, proxy_head *h, bool request,
			const char **why)
{
	te_state te = {0};
	conn_state cs = {0};
	bool have_te = false;
	for (;;) {
		const char *l;
		size_t ll;
		if (next_line(buf, len, &pos, &l, &ll) < 0) {
			*why = "malformed header line ending";
			return -EINVAL;
		}
		if (ll == 0)
			break;
		if (l[0] == ' ' || l[0] == '\t') {
			*why = "obsolete header line folding";
			return -EINVAL;
		}
		size_t c = 0;
		while (c < ll && is_tchar((unsigned char)l[c]))
			c++;
		if (c == 0 || c >= ll || l[c] != ':') {
			*why = "malformed header name";
			return -EINVAL;
		}
		size_t vs = c + 1, ve = ll;
		while (vs < ve && (l[vs] == ' ' || l[vs] == '\t'))
			vs++;
		while (ve > vs && (l[ve - 1] == ' ' || l[ve - 1] == '\t'))
			ve--;
		for (size_t i = vs; i < ve; i++) {
			unsigned char b = (unsigned char)l[i];
			if ((b < 0x20 && b != '\t') || b == 0x7f) {
				*why = "control character in a header value";
				return -EINVAL;
			}
		}
		if (h->n == PROXY_MAX_HEADERS) {
			*why = "too many header fields";
			return -E2BIG;
		}
		proxy_hdr *e = &h->h[h->n++];
		e->name = l;
		e->nlen = c;
		e->val = l + vs;
		e->vlen = ve - vs;

		if (eq_ci(e->name, e->nlen, "content-length")) {
			uint64_t v = 0;
			if (e->vlen == 0 || e->vlen > 18) {
				*why = "invalid Content-Length";
				return -EINVAL;
			}
			for (size_t i = 0; i < e->vlen; i++) {
				if (e->val[i] < '0' || e->val[i] > '9') {
					*why = "invalid Content-Length";
					return -EINVAL;
				}
				v = v * 10 + (uint64_t)(e->val[i] - '0');
			}
			if (h->has_length && h->length != v) {
				*why = "conflicting Content-Length values";
				return -EINVAL;
			}
			h->has_length = true;
			h->length = v;
		} else if (eq_ci(e->name, e->nlen, "transfer-encoding")) {
			have_te = true;
			each_token(e->val, e->vlen, te_token, &te);
		} else if (eq_ci(e->name, e->nlen, "connection")) {
			each_token(e->val, e->vlen, conn_token, &cs);
		} else if (request && eq_ci(e->name, e->nlen, "expect")) {
			h->expect_continue = eq_ci(e->val, e->vlen, "100-continue");
		}
	}
	if (pos != len) {
		*why = "bytes after the header section";
		return -EINVAL;
	}
	if (have_te) {
		if (request && (h->has_length || h->minor == 0)) {
			*why = "Transfer-Encoding with Content-Length or in HTTP/1.0";
			return -EINVAL;
		}
		if (te.n != 1 || te.other || !te.last_chunked) {
			*why = "unsupported transfer coding (only chunked)";
			return -ENOTSUP;
		}
		/* RFC 9112 §6.3: Transfer-Encoding overrides Content-Length. */
		h->chunked = true;
		h->has_length = false;
	}
	h->close = cs.close || (h->minor == 0 && !cs.keep_alive);
	return 0;
}

/* "HTTP/1.x" at |p|: the minor version, or -1. */
static int http_version(const char *p, size_t n)
{
	if (n != 8 || memcmp(p, "HTTP/1.", 7) || (p[7] != '0' && p[7] != '1'))
		return -1;
	return p[7] - '0';
}

int proxy_parse_request(const char *buf, size_t len, proxy_head *h, const char **why)
{
	memset(h, 0, sizeof(*h));
	size_t pos = 0;
	const char *l;
	size_t ll;
	if (next_line(buf, len, &pos, &l, &ll) < 0) {
		*why = "malformed request line";
		return -EINVAL;
	}
	size_t m = 0;
	while (m < ll && m < 32 && is_tchar((unsigned char)l[m]))
		m++;
	if (m == 0 || m >= ll || l[m] != ' ') {
		*why = "malformed request line";
		return -EINVAL;
	}
	size_t ts = m + 1, te = ts;
	while (te < ll && (unsigned char)l[te] > 0x20 && l[te] != 0x7f)
		te++;
	if (te == ts || te >= ll || l[te] != ' ' || (h->minor = http_version(l + te + 1, ll - te - 1)) < 0) {
		*why = "malformed request line";
		return -EINVAL;
	}
	h->method = l;
	h->mlen = m;
	h->target = l + ts;
	h->tlen = te - ts;
	return parse_fields(buf, len, pos, h, true, why);
}

int proxy_parse_response(const char *buf, size_t len, proxy_head *h, const char **why)
{
	memset(h, 0, sizeof(*h));
	size_t pos = 0;
	const char *l;
	size_t ll;
	if (next_line(buf, len, &pos, &l, &ll) < 0 || ll < 12 ||
	    (h->minor = http_version(l, 8)) < 0 || l[8] != ' ' || (ll > 12 && l[12] != ' ')) {
		*why = "malformed status line";
		return -EINVAL;
	}
	for (int i = 9; i < 12; i++) {
		if (l[i] < '0' || l[i] > '9') {
			*why = "malformed status line";
			return -EINVAL;
		}
		h->status = h->status * 10 + (l[i] - '0');
	}
	if (h->status < 100) {
		*why = "malformed status line";
		return -EINVAL;
	}
	h->reason = ll > 13 ? l + 13 : "";
	h->rlen = ll > 13 ? ll - 13 : 0;
	return parse_fields(buf, len, pos, h, false, why);
}

const proxy_hdr *proxy_head_find(const proxy_head *h, const char *name)
{
	for (size_t i = 0; i < h->n; i++)
		if (eq_ci(h->h[i].name, h->h[i].nlen, name))
			return &h->h[i];
	return NULL;
}

typedef struct opt_match {
	const char *name;
	size_t nlen;
	bool hit;
} opt_match;

static void opt_token(void *ctx, const char *p, size_t n)
{
	opt_match *m = ctx;
	if (n == m->nlen && strncasecmp(p, m->name, n) == 0)
		m->hit = true;
}

bool proxy_hop_by_hop(const proxy_head *h, const char *name, size_t nlen)
{
	static const char *const fixed[] = {"connection", "keep-alive", "proxy-connection",
					    "te", "trailer", "transfer-encoding", "upgrade"};
	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		if (eq_ci(name, nlen, fixed[i]))
			return true;
	opt_match m = {name, nlen, false};
	for (size_t i = 0; i < h->n && !m.hit; i++)
		if (eq_ci(h->h[i].name, h->h[i].nlen, "connection"))
			each_token(h->h[i].val, h->h[i].vlen, opt_token, &m);
	return m.hit;
}

enum {
	CS_SIZE,
	CS_EXT,
	CS_SIZE_LF,
	CS_DATA,
	CS_DATA_CR,
	CS_DATA_LF,
	CS_TRAILER_START,
	CS_TRAILER_LINE,
	CS_TRAILER_LF,
	CS_END_LF,
	CS_DONE,
};

#define CHUNK_LINE_MAX 4096 /* a size line with its extensions */
#define TRAILERS_MAX 16384

ssize_t proxy_chunked_feed(proxy_chunked *c, const char *p, size_t n, const char **data,
			   size_t *dlen, bool *done)
{
	*dlen = 0;
	*done = c->state == CS_DONE;
	size_t i = 0;
	while (i < n && c->state != CS_DONE) {
		unsigned char b = (unsigned char)p[i];
		unsigned v;
		switch (c->state) {
		case CS_SIZE:
			if (is_hex(b, &v)) {
				/* 15 hex digits: no overflow of the 64-bit count. */
				if (++c->digits > 15)
					return -EINVAL;
				c->left = c->left * 16 + v;
			} else if (c->digits && (b == ';' || b == ' ' || b == '\t')) {
				c->state = CS_EXT;
			} else if (c->digits && b == '\r') {
				c->state = CS_SIZE_LF;
			} else {
				return -EINVAL;
			}
			break;
		case CS_EXT:
			if (b == '\r')
				c->state = CS_SIZE_LF;
			else if ((b < 0x20 && b != '\t') || b == 0x7f || ++c->line > CHUNK_LINE_MAX)
				return -EINVAL;
			break;
		case CS_SIZE_LF:
			if (b != '\n')
				return -EINVAL;
			c->line = 0;
			c->digits = 0;
			c->state = c->left ? CS_DATA : CS_TRAILER_START;
			break;
		case CS_DATA: {
			size_t take = n - i;
			if ((uint64_t)take > c->left)
				take = (size_t)c->left;
			*data = p + i;
			*dlen = take;
			c->left -= take;
			if (c->left == 0)
				c->state = CS_DATA_CR;
			return (ssize_t)(i + take);
		}
		case CS_DATA_CR:
			if (b != '\r')
				return -EINVAL;
			c->state = CS_DATA_LF;
			break;
		case CS_DATA_LF:
			if (b != '\n')
				return -EINVAL;
			c->state = CS_SIZE;
			break;
		case CS_TRAILER_START:
			if (b == '\r') {
				c->state = CS_END_LF;
				break;
			}
			c->state = CS_TRAILER_LINE;
			/* fall through */
		case CS_TRAILER_LINE:
			if (b == '\r')
				c->state = CS_TRAILER_LF;
			else if (b == '\n' || ++c->trailers > TRAILERS_MAX)
				return -EINVAL;
			break;
		case CS_TRAILER_LF:
			if (b != '\n')
				return -EINVAL;
			c->state = CS_TRAILER_START;
			break;
		case CS_END_LF:
			if (b != '\n')
				return -EINVAL;
			c->state = CS_DONE;
			*done = true;
			break;
		}
		i++;
	}
	return (ssize_t)i;
}
