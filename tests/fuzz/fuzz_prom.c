/* The Prometheus text parser (user/metrics/prom.c).
 *
 * Input: [options][body]. Bit 0 of options picks tight limits (so every
 * limit is reached), bits 1-3 a sample after which the callback stops the
 * parse. Every sample handed out is read byte for byte (ASan checks the
 * pointers) and checked against the limits and the text format's rules. */
#include <errno.h>

#include "fuzz.h"
#include "metrics/prom.h"

typedef struct ctx {
	const mx_prom_limits *lim;
	unsigned n, stop_at;
	uint64_t sum;
} ctx;

static bool name_ok(const char *s, size_t n, bool label)
{
	if (!n)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
			  (!label && c == ':') || (i > 0 && c >= '0' && c <= '9');
		if (!ok)
			return false;
	}
	return true;
}

static int on_sample(void *arg, const mx_prom_sample *s)
{
	ctx *c = arg;
	FUZZ_CHECK(name_ok(s->name, s->name_len, false));
	FUZZ_CHECK(name_ok(s->family, s->family_len, false));
	FUZZ_CHECK(s->family_len <= s->name_len && memcmp(s->family, s->name, s->family_len) == 0);
	FUZZ_CHECK((unsigned)s->type <= MX_PROM_SUMMARY);
	FUZZ_CHECK(strcmp(mx_prom_type_name(s->type), "unknown") != 0);
	FUZZ_CHECK(s->line >= 1);
	if (c->lim->max_labels)
		FUZZ_CHECK(s->n_labels <= c->lim->max_labels);
	FUZZ_CHECK(s->n_labels == 0 || s->labels);
	for (uint32_t i = 0; i < s->n_labels; i++) {
		const mx_prom_label *l = &s->labels[i];
		FUZZ_CHECK(name_ok(l->name, l->name_len, true));
		for (size_t j = 0; j < l->value_len; j++)
			c->sum += (unsigned char)l->value[j];
		for (uint32_t k = 0; k < i; k++)
			FUZZ_CHECK(!(s->labels[k].name_len == l->name_len &&
				     memcmp(s->labels[k].name, l->name, l->name_len) == 0));
	}
	uint64_t bits;
	memcpy(&bits, &s->value, sizeof(bits));
	c->sum += bits + (uint64_t)s->ts_ms;
	FUZZ_CHECK(s->has_ts || s->ts_ms == 0);
	c->n++;
	return c->stop_at && c->n >= c->stop_at;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fin f = {data, size};
	uint8_t opt = fin_u8(&f);
	mx_prom_limits tight = {.max_body = 4096, .max_line = 80, .max_labels = 3,
				.max_families = 4};
	mx_prom_limits none = {0};
	mx_prom_limits *lim = opt & 1 ? &tight : &none;
	char *buf = malloc(f.n ? f.n : 1);
	FUZZ_CHECK(buf);
	memcpy(buf, f.p, f.n);

	ctx c = {.lim = lim, .stop_at = (opt >> 1) & 7};
	char err[128];
	err[0] = '\0';
	int r = mx_prom_parse(buf, f.n, lim, on_sample, &c, err, sizeof(err));
	FUZZ_CHECK(r == 0 || r == -EINVAL || r == -E2BIG || r == -ENOMEM || r == -ECANCELED);
	FUZZ_CHECK(r != 0 || !c.stop_at || c.n < c.stop_at);
	FUZZ_CHECK(r != -ECANCELED || (c.stop_at && c.n == c.stop_at));
	if (r < 0 && r != -ECANCELED)
		FUZZ_CHECK(err[0] != '\0');

	/* Same text, same answer. */
	ctx again = {.lim = lim, .stop_at = c.stop_at};
	FUZZ_CHECK(mx_prom_parse(buf, f.n, lim, on_sample, &again, NULL, 0) == r);
	FUZZ_CHECK(again.n == c.n && again.sum == c.sum);
	free(buf);
	return 0;
}
