/* Engine mappings: metric specs of a core-metrics-extractor engine config and
 * the extraction rules of spec §6 (v1.5.0 datalayer/extractor/metrics). */
#include "metrics/metrics.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/prom.h"

enum { M_QUEUE, M_RUNNING, M_KV, M_LORA, M_CACHE, M_BSIZE, M_NBLOCKS, M_N };

typedef struct spec {
	char *name; /* NULL: the metric is disabled */
	uint32_t n;
	char **keys, **values; /* "=" matchers only */
} spec;

struct mx_engine {
	char *name;
	spec sp[M_N];
	char *bs_label, *nb_label;
};

static void seterr(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
	if (!errlen || err[0])
		return; /* keep the first problem */
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static bool blank(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool name_char(char c, bool first, bool label)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
	       (!label && c == ':') || (!first && c >= '0' && c <= '9');
}

static const char *skip(const char *s)
{
	while (blank(*s))
		s++;
	return s;
}

static void spec_free(spec *sp)
{
	for (uint32_t i = 0; i < sp->n; i++) {
		free(sp->keys[i]);
		free(sp->values[i]);
	}
	free(sp->keys);
	free(sp->values);
	free(sp->name);
	memset(sp, 0, sizeof(*sp));
}

static int spec_add(spec *sp, const char *k, size_t kl, const char *v, size_t vl)
{
	char **nk = realloc(sp->keys, (sp->n + 1) * sizeof(*nk));
	if (!nk)
		return -ENOMEM;
	sp->keys = nk;
	char **nv = realloc(sp->values, (sp->n + 1) * sizeof(*nv));
	if (!nv)
		return -ENOMEM;
	sp->values = nv;
	sp->keys[sp->n] = strndup(k, kl);
	sp->values[sp->n] = strndup(v, vl);
	if (!sp->keys[sp->n] || !sp->values[sp->n]) {
		free(sp->keys[sp->n]);
		free(sp->values[sp->n]);
		return -ENOMEM;
	}
	sp->n++;
	return 0;
}

/* "name{label=value,...}": values quoted or bare; only "=" matchers count and
 * "__"-prefixed labels are ignored, as the reference does. */
static int spec_parse(const char *s, spec *sp)
{
	memset(sp, 0, sizeof(*sp));
	s = skip(s);
	if (!*s)
		return 0;
	const char *ns = s;
	if (!name_char(*s, true, false))
		return -EINVAL;
	while (name_char(*s, false, false))
		s++;
	if (!(sp->name = strndup(ns, (size_t)(s - ns))))
		return -ENOMEM;
	s = skip(s);
	if (*s == '{') {
		s = skip(s + 1);
		while (*s != '}') {
			const char *k = s;
			if (!name_char(*s, true, true))
				goto bad;
			while (name_char(*s, false, true))
				s++;
			size_t kl = (size_t)(s - k);
			s = skip(s);
			bool eq = false;
			if (s[0] == '=' && s[1] != '~') {
				eq = true;
				s++;
			} else if ((s[0] == '=' || s[0] == '!') && (s[1] == '~' || s[1] == '=')) {
				s += 2;
			} else {
				goto bad;
			}
			s = skip(s);
			char buf[1024];
			size_t vl = 0;
			if (*s == '"') {
				for (s++; *s != '"'; s++) {
					char c = *s;
					if (!c)
						goto bad;
					if (c == '\\') {
						c = *++s;
						if (c == 'n')
							c = '\n';
						else if (c != '\\' && c != '"')
							goto bad;
					}
					if (vl >= sizeof(buf))
						goto bad;
					buf[vl++] = c;
				}
				s++;
			} else {
				while (*s && *s != ',' && *s != '}' && *s != '"' && !blank(*s)) {
					if (vl >= sizeof(buf))
						goto bad;
					buf[vl++] = *s++;
				}
				if (!vl)
					goto bad;
			}
			if (eq && !(kl >= 2 && k[0] == '_' && k[1] == '_')) {
				int rc = spec_add(sp, k, kl, buf, vl);
				if (rc < 0) {
					spec_free(sp);
					return rc;
				}
			}
			s = skip(s);
			if (*s == ',')
				s = skip(s + 1);
			else if (*s != '}')
				goto bad;
		}
		s = skip(s + 1);
	}
	if (*s)
		goto bad;
	return 0;
bad:
	spec_free(sp);
	return -EINVAL;
}

void mx_engine_free(mx_engine *e)
{
	if (!e)
		return;
	for (int i = 0; i < M_N; i++)
		spec_free(&e->sp[i]);
	free(e->name);
	free(e->bs_label);
	free(e->nb_label);
	free(e);
}

const char *mx_engine_name(const mx_engine *e)
{
	return e->name;
}

static const char *nz(const char *s)
{
	return s ? s : "";
}

mx_engine *mx_engine_new(const sched_engine *se, char *err, size_t errlen)
{
	mx_engine *e = calloc(1, sizeof(*e));
	if (!e)
		goto nomem;
	const char *specs[M_N] = {se->queued_requests_spec, se->running_requests_spec,
				  se->kv_usage_spec, se->lora_spec, se->cache_info_spec,
				  se->cache_block_size_spec, se->cache_num_blocks_spec};
	const char *bs = nz(se->cache_block_size_label), *nb = nz(se->cache_num_blocks_label);
	e->name = strdup(nz(se->name));
	e->bs_label = strdup(*bs ? bs : "block_size");
	e->nb_label = strdup(*nb ? nb : "num_gpu_blocks");
	if (!e->name || !e->bs_label || !e->nb_label)
		goto nomem;
	for (int i = 0; i < M_N; i++) {
		int rc = spec_parse(nz(specs[i]), &e->sp[i]);
		if (rc == -ENOMEM)
			goto nomem;
		if (rc < 0) {
			if (errlen)
				snprintf(err, errlen,
					 "engine \"%s\": invalid metric specification \"%s\"",
					 e->name, specs[i]);
			mx_engine_free(e);
			return NULL;
		}
	}
	return e;
nomem:
	if (errlen)
		snprintf(err, errlen, "out of memory");
	mx_engine_free(e);
	return NULL;
}

/* The series chosen so far for one metric. */
typedef struct pick {
	bool family;    /* a sample with the metric name was seen */
	bool found;     /* a matching series of gauge or counter type */
	bool bad_type;
	double value;
	int64_t ts;
	/* cache info labels */
	bool has_bs, has_nb, bad_bs, bad_nb;
	int64_t bs, nb;
	/* LoRA info labels */
	char *running, *waiting, *max_lora;
} pick;

typedef struct ex_ctx {
	const mx_engine *e;
	pick p[M_N];
	bool nomem;
} ex_ctx;

static bool str_eq(const char *a, size_t al, const char *b)
{
	return strlen(b) == al && memcmp(a, b, al) == 0;
}

static const mx_prom_label *label(const mx_prom_sample *s, const char *name)
{
	for (uint32_t i = 0; i < s->n_labels; i++)
		if (str_eq(s->labels[i].name, s->labels[i].name_len, name))
			return &s->labels[i];
	return NULL;
}

static bool matches(const spec *sp, const mx_prom_sample *s)
{
	for (uint32_t i = 0; i < sp->n; i++) {
		const mx_prom_label *l = label(s, sp->keys[i]);
		if (!l || !str_eq(l->value, l->value_len, sp->values[i]))
			return false;
	}
	return true;
}

static bool parse_count(const mx_prom_label *l, int64_t *out)
{
	if (!l || !l->value_len || l->value_len > 18)
		return false;
	int64_t v = 0;
	for (size_t i = 0; i < l->value_len; i++) {
		if (l->value[i] < '0' || l->value[i] > '9')
			return false;
		v = v * 10 + (l->value[i] - '0');
	}
	*out = v;
	return true;
}

static char *dup_label(const mx_prom_sample *s, const char *name, bool *nomem)
{
	const mx_prom_label *l = label(s, name);
	char *r = l ? strndup(l->value, l->value_len) : strdup("");
	if (!r)
		*nomem = true;
	return r;
}

static void take_lora(ex_ctx *x, pick *p, const mx_prom_sample *s)
{
	const mx_prom_label *r = label(s, "running_lora_adapters");
	const mx_prom_label *w = label(s, "waiting_lora_adapters");
	/* A series with neither list says nothing about adapters: the reference
	 * keeps the last set it saw. */
	if ((!r || !r->value_len) && (!w || !w->value_len))
		return;
	if (!(s->value > p->value)) /* the largest value (a timestamp) wins */
		return;
	free(p->running);
	free(p->waiting);
	free(p->max_lora);
	p->running = dup_label(s, "running_lora_adapters", &x->nomem);
	p->waiting = dup_label(s, "waiting_lora_adapters", &x->nomem);
	p->max_lora = dup_label(s, "max_lora", &x->nomem);
	p->value = s->value;
	p->found = true;
}

static int on_sample(void *ctx, const mx_prom_sample *s)
{
	ex_ctx *x = ctx;
	for (int k = 0; k < M_N; k++) {
		const spec *sp = &x->e->sp[k];
		pick *p = &x->p[k];
		if (!sp->name || s->family_len != s->name_len ||
		    !str_eq(s->name, s->name_len, sp->name))
			continue;
		p->family = true;
		if (!matches(sp, s))
			continue;
		if (s->type != MX_PROM_GAUGE && s->type != MX_PROM_COUNTER) {
			p->bad_type = true;
			continue;
		}
		if (k == M_LORA) {
			take_lora(x, p, s);
			continue;
		}
		/* The greatest timestamp wins; text without one reads as 0, so
		 * the first matching series is kept. */
		int64_t ts = s->has_ts ? s->ts_ms : 0;
		if (p->found && ts <= p->ts)
			continue;
		if (!p->found && ts < 0)
			continue;
		p->found = true;
		p->ts = ts;
		p->value = s->value;
		if (k == M_CACHE) {
			const mx_prom_label *b = label(s, x->e->bs_label);
			const mx_prom_label *n = label(s, x->e->nb_label);
			p->has_bs = parse_count(b, &p->bs);
			p->has_nb = parse_count(n, &p->nb);
			p->bad_bs = b && !p->has_bs;
			p->bad_nb = n && !p->has_nb;
		}
	}
	return x->nomem;
}

/* Splits "a, b,c" into trimmed names in |a|. */
static int split_adapters(const char *list, arena *a, const char ***out, uint32_t *n_out)
{
	uint32_t cnt = 1;
	for (const char *c = list; *c; c++)
		cnt += *c == ',';
	const char **v = arena_alloc(a, cnt * sizeof(*v));
	if (!v)
		return -ENOMEM;
	uint32_t n = 0;
	for (const char *c = list;;) {
		const char *end = strchr(c, ',');
		if (!end)
			end = c + strlen(c);
		const char *b = c, *e = end;
		while (b < e && blank(*b))
			b++;
		while (e > b && blank(e[-1]))
			e--;
		if (e > b && !(v[n++] = arena_strndup(a, b, (size_t)(e - b))))
			return -ENOMEM;
		if (!*end)
			break;
		c = end + 1;
	}
	*out = v;
	*n_out = n;
	return 0;
}

static const char *const metric_names[M_N] = {
	"queuedRequests", "runningRequests", "kvUsage", "lora", "cacheInfo", "cacheBlockSize",
	"cacheNumBlocks",
};

static bool usable(const pick *p, const spec *sp, int k, char *err, size_t errlen)
{
	if (!sp->name)
		return false;
	if (p->bad_type)
		seterr(err, errlen, "%s: metric \"%s\" is neither a gauge nor a counter",
		       metric_names[k], sp->name);
	else if (!p->family)
		seterr(err, errlen, "%s: metric family \"%s\" not found", metric_names[k],
		       sp->name);
	else if (!p->found && k != M_LORA)
		seterr(err, errlen, "%s: no matching metric found for \"%s\"", metric_names[k],
		       sp->name);
	return p->found;
}

static int commit(ex_ctx *x, arena *a, store_metrics *m, char *err, size_t errlen)
{
	const mx_engine *e = x->e;
	int n = 0;
	double *dst[3] = {&m->waiting_queue, &m->running, &m->kv_usage};
	for (int k = M_QUEUE; k <= M_KV; k++) {
		if (usable(&x->p[k], &e->sp[k], k, err, errlen)) {
			*dst[k] = x->p[k].value;
			n++;
		}
	}
	pick *p = &x->p[M_LORA];
	if (usable(p, &e->sp[M_LORA], M_LORA, err, errlen)) {
		const char **run, **wait;
		uint32_t nr, nw;
		if (split_adapters(p->running, a, &run, &nr) < 0 ||
		    split_adapters(p->waiting, a, &wait, &nw) < 0)
			return -ENOMEM;
		m->active_models = run;
		m->n_active_models = nr;
		m->waiting_models = wait;
		m->n_waiting_models = nw;
		if (*p->max_lora) {
			mx_prom_label l = {.value = p->max_lora, .value_len = strlen(p->max_lora)};
			int64_t v;
			if (parse_count(&l, &v) && v <= INT32_MAX)
				m->max_lora = (int32_t)v;
			else
				seterr(err, errlen, "lora: invalid max_lora \"%s\"", p->max_lora);
		}
		n++;
	}
	p = &x->p[M_CACHE];
	if (usable(p, &e->sp[M_CACHE], M_CACHE, err, errlen)) {
		if (p->has_bs && p->bs <= INT32_MAX)
			m->cache_block_size = (int32_t)p->bs;
		else
			seterr(err, errlen, "cacheInfo: no valid label \"%s\"", e->bs_label);
		if (p->has_nb)
			m->cache_num_blocks = p->nb;
		else
			seterr(err, errlen, "cacheInfo: no valid label \"%s\"", e->nb_label);
		n += p->has_bs || p->has_nb;
	}
	for (int k = M_BSIZE; k <= M_NBLOCKS; k++) {
		p = &x->p[k];
		if (!usable(p, &e->sp[k], k, err, errlen))
			continue;
		double v = p->value;
		if (!(v >= 0 && v <= (k == M_BSIZE ? INT32_MAX : 9.0e18))) {
			seterr(err, errlen, "%s: value out of range", metric_names[k]);
			continue;
		}
		if (k == M_BSIZE)
			m->cache_block_size = (int32_t)v;
		else
			m->cache_num_blocks = (int64_t)v;
		n++;
	}
	return n;
}

int mx_extract(const mx_engine *e, const char *body, size_t len, arena *a, store_metrics *m,
	       char *err, size_t errlen)
{
	ex_ctx x = {.e = e};
	if (errlen)
		err[0] = '\0';
	int rc = mx_prom_parse(body, len, NULL, on_sample, &x, err, errlen);
	if (rc == 0 || x.nomem) {
		if (x.nomem)
			rc = -ENOMEM;
		else
			rc = commit(&x, a, m, err, errlen);
	}
	if (rc == -ENOMEM && errlen)
		snprintf(err, errlen, "out of memory");
	for (int k = 0; k < M_N; k++) {
		free(x.p[k].running);
		free(x.p[k].waiting);
		free(x.p[k].max_lora);
	}
	return rc;
}
