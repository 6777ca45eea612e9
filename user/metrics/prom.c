#include "metrics/prom.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_NUM_TOKEN 128

typedef struct family {
	const char *name; /* NULL: free slot */
	size_t len;
	enum mx_prom_type type;
	bool help, typed, samples;
} family;

typedef struct parser {
	const char *buf;
	size_t len;
	mx_prom_limits lim;
	mx_prom_sample_fn fn;
	void *ctx;
	char *err;
	size_t errlen;
	uint32_t line;
	family *tab; /* open addressing, cap a power of two */
	size_t cap, n;
	char *scratch; /* unescaped label values of the current line */
	mx_prom_label *labels;
} parser;

static int perr(parser *p, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int perr(parser *p, int code, const char *fmt, ...)
{
	if (p->errlen) {
		int n = snprintf(p->err, p->errlen, "line %u: ", p->line);
		if (n < 0 || (size_t)n >= p->errlen)
			n = 0;
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return code;
}

const char *mx_prom_type_name(enum mx_prom_type t)
{
	static const char *const names[] = {"untyped", "counter", "gauge", "histogram", "summary"};
	return (unsigned)t < 5 ? names[t] : "unknown";
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

static bool name_start(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
}

static bool name_char(char c)
{
	return name_start(c) || (c >= '0' && c <= '9');
}

static bool label_start(char c)
{
	return name_start(c) && c != ':';
}

static bool label_char(char c)
{
	return name_char(c) && c != ':';
}

static uint64_t hash(const char *s, size_t n)
{
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
	return h;
}

static family *fam_find(parser *p, const char *name, size_t len)
{
	if (!p->cap)
		return NULL;
	for (size_t i = hash(name, len) & (p->cap - 1);; i = (i + 1) & (p->cap - 1)) {
		family *f = &p->tab[i];
		if (!f->name)
			return NULL;
		if (f->len == len && memcmp(f->name, name, len) == 0)
			return f;
	}
}

static int fam_add(parser *p, const char *name, size_t len, family **out)
{
	if (p->n >= p->lim.max_families)
		return perr(p, -E2BIG, "more than %u metric families", p->lim.max_families);
	if ((p->n + 1) * 2 > p->cap) {
		size_t ncap = p->cap ? p->cap * 2 : 64;
		family *nt = calloc(ncap, sizeof(*nt));
		if (!nt)
			return perr(p, -ENOMEM, "out of memory");
		for (size_t i = 0; i < p->cap; i++) {
			if (!p->tab[i].name)
				continue;
			size_t j = hash(p->tab[i].name, p->tab[i].len) & (ncap - 1);
			while (nt[j].name)
				j = (j + 1) & (ncap - 1);
			nt[j] = p->tab[i];
		}
		free(p->tab);
		p->tab = nt;
		p->cap = ncap;
	}
	size_t i = hash(name, len) & (p->cap - 1);
	while (p->tab[i].name)
		i = (i + 1) & (p->cap - 1);
	p->tab[i] = (family){.name = name, .len = len};
	p->n++;
	*out = &p->tab[i];
	return 0;
}

/* Go's strconv.ParseFloat on decimal text and the special values; hex
 * floats and underscores are not exposition text and are refused. */
static bool parse_float(const char *s, size_t n, double *out)
{
	char tmp[MAX_NUM_TOKEN + 1];
	if (n == 0 || n > MAX_NUM_TOKEN)
		return false;
	size_t i = 0;
	bool neg = false;
	if (s[0] == '+' || s[0] == '-') {
		neg = s[0] == '-';
		i = 1;
	}
	if ((n - i == 3 && strncasecmp(s + i, "inf", 3) == 0) ||
	    (n - i == 8 && strncasecmp(s + i, "infinity", 8) == 0)) {
		*out = neg ? -INFINITY : INFINITY;
		return true;
	}
	if (i == 0 && n == 3 && strncasecmp(s, "nan", 3) == 0) {
		*out = NAN;
		return true;
	}
	size_t digits = 0;
	while (i < n && s[i] >= '0' && s[i] <= '9')
		i++, digits++;
	if (i < n && s[i] == '.') {
		i++;
		while (i < n && s[i] >= '0' && s[i] <= '9')
			i++, digits++;
	}
	if (!digits)
		return false;
	if (i < n && (s[i] == 'e' || s[i] == 'E')) {
		i++;
		if (i < n && (s[i] == '+' || s[i] == '-'))
			i++;
		size_t ed = 0;
		while (i < n && s[i] >= '0' && s[i] <= '9')
			i++, ed++;
		if (!ed)
			return false;
	}
	if (i != n)
		return false;
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	errno = 0;
	double v = strtod(tmp, NULL);
	if (errno == ERANGE && isinf(v))
		return false; /* overflow is an error in Go; underflow is not */
	*out = v;
	return true;
}

static bool parse_int64(const char *s, size_t n, int64_t *out)
{
	size_t i = 0;
	bool neg = false;
	if (n && (s[0] == '+' || s[0] == '-')) {
		neg = s[0] == '-';
		i = 1;
	}
	if (i == n)
		return false;
	uint64_t v = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
	for (; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		unsigned d = (unsigned)(s[i] - '0');
		if (v > (limit - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*out = neg ? (int64_t)(0 - v) : (int64_t)v;
	return true;
}

static size_t skip_blank(const char *l, size_t i, size_t n)
{
	while (i < n && is_blank(l[i]))
		i++;
	return i;
}

static size_t token_end(const char *l, size_t i, size_t n)
{
	while (i < n && !is_blank(l[i]))
		i++;
	return i;
}

static int parse_comment(parser *p, const char *l, size_t n)
{
	size_t i = skip_blank(l, 1, n), e = token_end(l, i, n);
	bool help = e - i == 4 && memcmp(l + i, "HELP", 4) == 0;
	bool type = e - i == 4 && memcmp(l + i, "TYPE", 4) == 0;
	if (!help && !type)
		return 0; /* an ordinary comment */
	i = skip_blank(l, e, n);
	size_t ns = i;
	if (i >= n || !name_start(l[i]))
		return perr(p, -EINVAL, "invalid metric name in comment");
	while (i < n && name_char(l[i]))
		i++;
	if (i < n && !is_blank(l[i]))
		return perr(p, -EINVAL, "invalid metric name in comment");
	family *f = fam_find(p, l + ns, i - ns);
	if (!f) {
		int rc = fam_add(p, l + ns, i - ns, &f);
		if (rc < 0)
			return rc;
	}
	i = skip_blank(l, i, n);
	if (help) {
		if (f->help)
			return perr(p, -EINVAL, "second HELP line for metric name \"%.*s\"",
				    (int)f->len, f->name);
		f->help = true;
		for (; i < n; i++) {
			if (l[i] != '\\')
				continue;
			if (i + 1 >= n || (l[i + 1] != '\\' && l[i + 1] != 'n'))
				return perr(p, -EINVAL, "invalid escape sequence in HELP text");
			i++;
		}
		return 0;
	}
	if (f->typed || f->samples)
		return perr(p, -EINVAL,
			    "second TYPE line for metric name \"%.*s\", or TYPE reported after "
			    "samples",
			    (int)f->len, f->name);
	e = token_end(l, i, n);
	static const char *const names[] = {"untyped", "counter", "gauge", "histogram", "summary"};
	int t = -1;
	for (int k = 0; k < 5; k++)
		if (e - i == strlen(names[k]) && memcmp(l + i, names[k], e - i) == 0)
			t = k;
	if (t < 0)
		return perr(p, -EINVAL, "unknown metric type \"%.*s\"", (int)(e - i), l + i);
	if (skip_blank(l, e, n) != n)
		return perr(p, -EINVAL, "spurious text after metric type");
	f->typed = true;
	f->type = (enum mx_prom_type)t;
	return 0;
}

static bool has_suffix(const char *s, size_t n, const char *suf, size_t *base)
{
	size_t k = strlen(suf);
	if (n <= k || memcmp(s + n - k, suf, k) != 0)
		return false;
	*base = n - k;
	return true;
}

static const mx_prom_label *find_label(const mx_prom_sample *s, const char *name)
{
	size_t k = strlen(name);
	for (uint32_t i = 0; i < s->n_labels; i++)
		if (s->labels[i].name_len == k && memcmp(s->labels[i].name, name, k) == 0)
			return &s->labels[i];
	return NULL;
}

/* Finds (or creates, untyped) the family of a sample and checks the
 * histogram and summary rules expfmt applies. */
static int resolve_family(parser *p, mx_prom_sample *s)
{
	family *f = fam_find(p, s->name, s->name_len);
	size_t base;
	if (!f || !f->typed || (f->type != MX_PROM_HISTOGRAM && f->type != MX_PROM_SUMMARY)) {
		family *parent = NULL;
		if (has_suffix(s->name, s->name_len, "_bucket", &base)) {
			parent = fam_find(p, s->name, base);
			if (parent && parent->type != MX_PROM_HISTOGRAM)
				parent = NULL;
		} else if (has_suffix(s->name, s->name_len, "_sum", &base) ||
			   has_suffix(s->name, s->name_len, "_count", &base)) {
			parent = fam_find(p, s->name, base);
			if (parent && parent->type != MX_PROM_HISTOGRAM &&
			    parent->type != MX_PROM_SUMMARY)
				parent = NULL;
		}
		if (parent && !f)
			f = parent;
	}
	if (!f) {
		int rc = fam_add(p, s->name, s->name_len, &f);
		if (rc < 0)
			return rc;
	}
	f->samples = true;
	s->family = f->name;
	s->family_len = f->len;
	s->type = f->type;
	bool exact = f->len == s->name_len;
	const mx_prom_label *lb;
	double v;
	if (f->type == MX_PROM_HISTOGRAM) {
		if (exact)
			return perr(p, -EINVAL, "histogram \"%.*s\" sample without _bucket, _sum "
				    "or _count suffix", (int)f->len, f->name);
		if (has_suffix(s->name, s->name_len, "_bucket", &base) && base == f->len) {
			lb = find_label(s, "le");
			if (!lb)
				return perr(p, -EINVAL, "histogram bucket without \"le\" label");
			if (!parse_float(lb->value, lb->value_len, &v))
				return perr(p, -EINVAL, "expected float as value for \"le\" label, "
					    "got \"%.*s\"", (int)lb->value_len, lb->value);
		}
	} else if (f->type == MX_PROM_SUMMARY && exact) {
		lb = find_label(s, "quantile");
		if (!lb)
			return perr(p, -EINVAL, "summary sample without \"quantile\" label");
		if (!parse_float(lb->value, lb->value_len, &v))
			return perr(p, -EINVAL, "expected float as value for \"quantile\" label, "
				    "got \"%.*s\"", (int)lb->value_len, lb->value);
	}
	return 0;
}

static int parse_labels(parser *p, const char *l, size_t n, size_t *pi, mx_prom_sample *s)
{
	size_t i = *pi + 1, sc = 0;
	uint32_t nl = 0;
	for (;;) {
		i = skip_blank(l, i, n);
		if (i < n && l[i] == '}')
			break;
		size_t ns = i;
		if (i >= n || !label_start(l[i]))
			return perr(p, -EINVAL, "invalid label name");
		while (i < n && label_char(l[i]))
			i++;
		size_t nlen = i - ns;
		if (nlen == 8 && memcmp(l + ns, "__name__", 8) == 0)
			return perr(p, -EINVAL, "label name \"__name__\" is reserved");
		for (uint32_t k = 0; k < nl; k++)
			if (p->labels[k].name_len == nlen && memcmp(p->labels[k].name, l + ns, nlen) == 0)
				return perr(p, -EINVAL, "duplicate label name \"%.*s\"", (int)nlen,
					    l + ns);
		if (nl >= p->lim.max_labels)
			return perr(p, -E2BIG, "more than %u labels", p->lim.max_labels);
		i = skip_blank(l, i, n);
		if (i >= n || l[i] != '=')
			return perr(p, -EINVAL, "expected '=' after label name \"%.*s\"", (int)nlen,
				    l + ns);
		i = skip_blank(l, i + 1, n);
		if (i >= n || l[i] != '"')
			return perr(p, -EINVAL, "expected '\"' at start of label value");
		size_t vs = sc;
		for (i++;; i++) {
			if (i >= n)
				return perr(p, -EINVAL, "unterminated label value");
			char c = l[i];
			if (c == '"')
				break;
			if (c == '\\') {
				if (i + 1 >= n)
					return perr(p, -EINVAL, "unterminated label value");
				c = l[++i];
				if (c == 'n')
					c = '\n';
				else if (c != '\\' && c != '"')
					return perr(p, -EINVAL, "invalid escape sequence \"\\%c\"", c);
			}
			p->scratch[sc++] = c; /* never more than the line's length */
		}
		p->labels[nl++] = (mx_prom_label){l + ns, nlen, p->scratch + vs, sc - vs};
		i = skip_blank(l, i + 1, n);
		if (i < n && l[i] == ',') {
			i++;
			continue;
		}
		if (i < n && l[i] == '}')
			break;
		return perr(p, -EINVAL, "unexpected end of label value");
	}
	s->labels = p->labels;
	s->n_labels = nl;
	*pi = i + 1;
	return 0;
}

static int parse_sample(parser *p, const char *l, size_t n, size_t i)
{
	mx_prom_sample s = {.line = p->line, .labels = p->labels};
	size_t ns = i;
	if (!name_start(l[i]))
		return perr(p, -EINVAL, "invalid metric name");
	while (i < n && name_char(l[i]))
		i++;
	s.name = l + ns;
	s.name_len = i - ns;
	size_t j = skip_blank(l, i, n);
	if (j < n && l[j] == '{') {
		int rc = parse_labels(p, l, n, &j, &s);
		if (rc < 0)
			return rc;
		i = j;
	} else if (i < n && !is_blank(l[i])) {
		return perr(p, -EINVAL, "invalid metric name");
	}
	i = skip_blank(l, i, n);
	size_t e = token_end(l, i, n);
	if (e == i)
		return perr(p, -EINVAL, "expected a value for \"%.*s\"", (int)s.name_len, s.name);
	if (!parse_float(l + i, e - i, &s.value))
		return perr(p, -EINVAL, "expected float as value, got \"%.*s\"",
			    (int)(e - i > 64 ? 64 : e - i), l + i);
	i = skip_blank(l, e, n);
	if (i < n) {
		e = token_end(l, i, n);
		if (!parse_int64(l + i, e - i, &s.ts_ms))
			return perr(p, -EINVAL, "expected integer as timestamp, got \"%.*s\"",
				    (int)(e - i > 64 ? 64 : e - i), l + i);
		s.has_ts = true;
		if (skip_blank(l, e, n) != n)
			return perr(p, -EINVAL, "spurious string after timestamp");
	}
	int rc = resolve_family(p, &s);
	if (rc < 0)
		return rc;
	if (p->fn && p->fn(p->ctx, &s))
		return perr(p, -ECANCELED, "stopped by the caller");
	return 0;
}

static int parse_all(parser *p)
{
	size_t off = 0;
	while (off < p->len) {
		p->line++;
		const char *l = p->buf + off;
		const char *nl = memchr(l, '\n', p->len - off);
		size_t n = nl ? (size_t)(nl - l) : p->len - off;
		off += n + (nl ? 1 : 0);
		if (n > p->lim.max_line)
			return perr(p, -E2BIG, "line longer than %zu bytes", p->lim.max_line);
		size_t i = skip_blank(l, 0, n);
		if (i == n)
			continue;
		int rc = l[i] == '#' ? parse_comment(p, l + i, n - i) : parse_sample(p, l, n, i);
		if (rc < 0)
			return rc;
	}
	return 0;
}

int mx_prom_parse(const char *buf, size_t len, const mx_prom_limits *lim, mx_prom_sample_fn fn,
		  void *ctx, char *err, size_t errlen)
{
	parser p = {.buf = buf, .len = len, .fn = fn, .ctx = ctx, .err = err, .errlen = errlen};
	if (lim)
		p.lim = *lim;
	if (!p.lim.max_body)
		p.lim.max_body = MX_PROM_MAX_BODY;
	if (!p.lim.max_line)
		p.lim.max_line = 64 << 10;
	if (!p.lim.max_labels)
		p.lim.max_labels = 128;
	if (!p.lim.max_families)
		p.lim.max_families = 65536;
	if (errlen)
		err[0] = '\0';
	if (len > p.lim.max_body) {
		if (errlen)
			snprintf(err, errlen, "body of %zu bytes is over the %zu byte limit", len,
				 p.lim.max_body);
		return -E2BIG;
	}
	p.scratch = malloc(p.lim.max_line + 1);
	p.labels = malloc(p.lim.max_labels * sizeof(*p.labels));
	int rc;
	if (!p.scratch || !p.labels)
		rc = perr(&p, -ENOMEM, "out of memory");
	else
		rc = parse_all(&p);
	free(p.scratch);
	free(p.labels);
	free(p.tab);
	return rc;
}
