#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "harness.h"
#include "metrics/prom.h"

#define MAXS 32

typedef struct got {
	int n;
	char name[MAXS][64], family[MAXS][64];
	char labels[MAXS][256]; /* "k=v;k=v;" */
	double value[MAXS];
	enum mx_prom_type type[MAXS];
	int has_ts[MAXS];
	long long ts[MAXS];
	int stop_at;
} got;

static int collect(void *ctx, const mx_prom_sample *s)
{
	got *g = ctx;
	if (g->n >= MAXS)
		return 1;
	int i = g->n++;
	snprintf(g->name[i], 64, "%.*s", (int)s->name_len, s->name);
	snprintf(g->family[i], 64, "%.*s", (int)s->family_len, s->family);
	size_t o = 0;
	g->labels[i][0] = '\0';
	for (uint32_t k = 0; k < s->n_labels; k++)
		o += (size_t)snprintf(g->labels[i] + o, 256 - o, "%.*s=%.*s;",
				      (int)s->labels[k].name_len, s->labels[k].name,
				      (int)s->labels[k].value_len, s->labels[k].value);
	g->value[i] = s->value;
	g->type[i] = s->type;
	g->has_ts[i] = s->has_ts;
	g->ts[i] = s->ts_ms;
	return g->stop_at && g->n == g->stop_at;
}

static int parse(const char *text, got *g, char *err)
{
	memset(g, 0, sizeof(*g));
	return mx_prom_parse(text, strlen(text), NULL, collect, g, err, 256);
}

static void test_vllm_exposition(void)
{
	const char *t = "# HELP vllm:num_requests_waiting Number of requests waiting.\n"
			"# TYPE vllm:num_requests_waiting gauge\n"
			"vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} 3.0\n"
			"# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n"
			"# TYPE vllm:cache_config_info gauge\n"
			"vllm:cache_config_info{block_size=\"16\",num_gpu_blocks=\"2048\"} 1.0\n"
			"# TYPE req counter\n"
			"req_total 7\n"
			"req 5 1700000000000\n";
	got g;
	char err[256];
	CHECK_INT(parse(t, &g, err), 0);
	CHECK_STR(err, "");
	CHECK_INT(g.n, 4);
	CHECK_STR(g.name[0], "vllm:num_requests_waiting");
	CHECK_STR(g.labels[0], "engine=0;model_name=m;");
	CHECK(g.value[0] == 3.0);
	CHECK_INT(g.type[0], MX_PROM_GAUGE);
	CHECK_STR(g.labels[1], "block_size=16;num_gpu_blocks=2048;");
	/* req_total has no TYPE of its own: an untyped family. */
	CHECK_STR(g.family[2], "req_total");
	CHECK_INT(g.type[2], MX_PROM_UNTYPED);
	CHECK_INT(g.type[3], MX_PROM_COUNTER);
	CHECK_INT(g.has_ts[3], 1);
	CHECK_INT(g.ts[3], 1700000000000LL);
	CHECK_INT(g.has_ts[0], 0);
}

static void test_edges(void)
{
	const char *t = "\n   \n# just a comment\n#\n# HELP x help with \\\\ and \\n escapes\n"
			"  x{a=\"q\\\"uote\",b=\"back\\\\slash\",c=\"new\\nline\",} NaN\n"
			"x{} +Inf -5\n"
			"x\t-Inf\n"
			"x{ a = \"sp\" } 1e3\n"
			"x 0.5e-2\n"
			"x .5\n"
			"x 1.\n"
			"x{a=\"\xe2\x9c\x93\"} +3\n"
			"x 1"; /* no final newline */
	got g;
	char err[256];
	CHECK_INT(parse(t, &g, err), 0);
	CHECK_STR(err, "");
	CHECK_INT(g.n, 9);
	CHECK_STR(g.labels[0], "a=q\"uote;b=back\\slash;c=new\nline;");
	CHECK(isnan(g.value[0]));
	CHECK(isinf(g.value[1]) && g.value[1] > 0);
	CHECK_INT(g.ts[1], -5);
	CHECK(isinf(g.value[2]) && g.value[2] < 0);
	CHECK_STR(g.labels[3], "a=sp;");
	CHECK(g.value[3] == 1000.0);
	CHECK(fabs(g.value[4] - 0.005) < 1e-12);
	CHECK(g.value[5] == 0.5);
	CHECK(g.value[6] == 1.0);
	CHECK_STR(g.labels[7], "a=\xe2\x9c\x93;");
	CHECK(g.value[8] == 1.0);
	CHECK_INT(g.type[0], MX_PROM_UNTYPED);
}

static void test_histogram_summary(void)
{
	const char *t = "# TYPE h histogram\n"
			"h_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.3\nh_count 2\n"
			"# TYPE s summary\n"
			"s{quantile=\"0.5\"} 1\ns_sum 1\ns_count 1\n";
	got g;
	char err[256];
	CHECK_INT(parse(t, &g, err), 0);
	CHECK_INT(g.n, 7);
	CHECK_STR(g.family[0], "h");
	CHECK_INT(g.type[0], MX_PROM_HISTOGRAM);
	CHECK_STR(g.family[3], "h");
	CHECK_STR(g.family[4], "s");
	CHECK_INT(g.type[6], MX_PROM_SUMMARY);
}

static void expect_err(const char *text, int code, const char *msg)
{
	got g;
	char err[256];
	int rc = parse(text, &g, err);
	CHECK_INT(rc, code);
	if (!strstr(err, msg)) {
		fprintf(stderr, "  error \"%s\" lacks \"%s\"\n", err, msg);
		CHECK(0);
	}
}

static void test_malformed(void)
{
	expect_err("ok 1\n1bad 2\n", -EINVAL, "line 2: invalid metric name");
	expect_err("a-b 1\n", -EINVAL, "line 1: invalid metric name");
	expect_err("a\n", -EINVAL, "line 1: expected a value");
	expect_err("a{} \n", -EINVAL, "expected a value");
	expect_err("a abc\n", -EINVAL, "expected float as value, got \"abc\"");
	expect_err("a 0x10\n", -EINVAL, "expected float");
	expect_err("a 1_000\n", -EINVAL, "expected float");
	expect_err("a 1e\n", -EINVAL, "expected float");
	expect_err("a 1e999\n", -EINVAL, "expected float");
	expect_err("a -NaN\n", -EINVAL, "expected float");
	expect_err("a 1 12.5\n", -EINVAL, "expected integer as timestamp");
	expect_err("a 1 99999999999999999999\n", -EINVAL, "expected integer as timestamp");
	expect_err("a 1 2 3\n", -EINVAL, "spurious string after timestamp");
	expect_err("a{b=\"c\"\n", -EINVAL, "unexpected end of label value");
	expect_err("a{b=\"c} 1\n", -EINVAL, "unterminated label value");
	expect_err("a{b=c} 1\n", -EINVAL, "expected '\"' at start of label value");
	expect_err("a{b\"c\"} 1\n", -EINVAL, "expected '=' after label name \"b\"");
	expect_err("a{1b=\"c\"} 1\n", -EINVAL, "invalid label name");
	expect_err("a{b:c=\"c\"} 1\n", -EINVAL, "expected '='");
	expect_err("a{b=\"\\t\"} 1\n", -EINVAL, "invalid escape sequence \"\\t\"");
	expect_err("a{b=\"1\",b=\"2\"} 1\n", -EINVAL, "duplicate label name \"b\"");
	expect_err("a{__name__=\"x\"} 1\n", -EINVAL, "reserved");
	expect_err("a{b=\"1\" c=\"2\"} 1\n", -EINVAL, "unexpected end of label value");
	expect_err("# TYPE a gauge\n# TYPE a gauge\n", -EINVAL,
		   "line 2: second TYPE line for metric name \"a\"");
	expect_err("a 1\n# TYPE a gauge\n", -EINVAL, "TYPE reported after samples");
	expect_err("# HELP a x\n# HELP a y\n", -EINVAL, "line 2: second HELP line");
	expect_err("# HELP a bad \\t\n", -EINVAL, "invalid escape sequence in HELP text");
	expect_err("# TYPE a gauges\n", -EINVAL, "unknown metric type \"gauges\"");
	expect_err("# TYPE a gauge extra\n", -EINVAL, "spurious text after metric type");
	expect_err("# TYPE 1a gauge\n", -EINVAL, "invalid metric name in comment");
	expect_err("# HELP\n", -EINVAL, "invalid metric name in comment");
	expect_err("# TYPE h histogram\nh_bucket 1\n", -EINVAL, "without \"le\" label");
	expect_err("# TYPE h histogram\nh_bucket{le=\"x\"} 1\n", -EINVAL,
		   "expected float as value for \"le\"");
	expect_err("# TYPE h histogram\nh 1\n", -EINVAL, "without _bucket");
	expect_err("# TYPE s summary\ns 1\n", -EINVAL, "without \"quantile\" label");
	expect_err("a 1\r\n", -EINVAL, "expected float");
}

static void test_limits(void)
{
	char err[256];
	got g;
	memset(&g, 0, sizeof(g));
	mx_prom_limits lim = {.max_body = 10};
	CHECK_INT(mx_prom_parse("a 1\nb 2\nc 3\n", 12, &lim, collect, &g, err, sizeof(err)),
		  -E2BIG);
	CHECK(strstr(err, "over the 10 byte limit") != NULL);
	lim = (mx_prom_limits){.max_line = 8};
	CHECK_INT(mx_prom_parse("a 1\nabcdefghij 2\n", 17, &lim, collect, &g, err, sizeof(err)),
		  -E2BIG);
	CHECK(strstr(err, "line 2: line longer than 8 bytes") != NULL);
	lim = (mx_prom_limits){.max_labels = 2};
	const char *t = "a{x=\"1\",y=\"2\",z=\"3\"} 1\n";
	CHECK_INT(mx_prom_parse(t, strlen(t), &lim, collect, &g, err, sizeof(err)), -E2BIG);
	CHECK(strstr(err, "more than 2 labels") != NULL);
	lim = (mx_prom_limits){.max_families = 2};
	CHECK_INT(mx_prom_parse("a 1\nb 1\nc 1\n", 12, &lim, collect, &g, err, sizeof(err)),
		  -E2BIG);
	CHECK(strstr(err, "line 3: more than 2 metric families") != NULL);
	/* The default body limit is 16 MiB. */
	size_t big = MX_PROM_MAX_BODY + 1;
	char *b = malloc(big);
	memset(b, '\n', big);
	CHECK_INT(mx_prom_parse(b, big, NULL, NULL, NULL, err, sizeof(err)), -E2BIG);
	CHECK_INT(mx_prom_parse(b, big - 1, NULL, NULL, NULL, err, sizeof(err)), 0);
	free(b);
	/* Not NUL-terminated: the parser never reads past len. */
	char raw[3] = {'a', ' ', '1'};
	memset(&g, 0, sizeof(g));
	CHECK_INT(mx_prom_parse(raw, 3, NULL, collect, &g, err, sizeof(err)), 0);
	CHECK_INT(g.n, 1);
}

static void test_many_families_and_stop(void)
{
	/* Enough families to grow the table several times. */
	size_t cap = 200000, o = 0;
	char *b = malloc(cap);
	for (int i = 0; i < 5000; i++)
		o += (size_t)snprintf(b + o, cap - o, "# TYPE m%d gauge\nm%d %d\n", i, i, i);
	char err[256];
	CHECK_INT(mx_prom_parse(b, o, NULL, NULL, NULL, err, sizeof(err)), 0);
	got g;
	memset(&g, 0, sizeof(g));
	g.stop_at = 2;
	CHECK_INT(mx_prom_parse(b, o, NULL, collect, &g, err, sizeof(err)), -ECANCELED);
	CHECK_INT(g.n, 2);
	free(b);
}

/* Random byte edits of a valid exposition: every outcome is 0 or a clean
 * error, never a crash (run under ASan to catch overreads). */
static void test_mutations(void)
{
	const char *seed = "# HELP a h\\n\n# TYPE a gauge\na{x=\"1\",y=\"a\\\"b\"} 1.5e3 12\n"
			   "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nb NaN\n";
	size_t n = strlen(seed);
	char buf[256], err[256];
	uint64_t r = 88172645463325252ull;
	int ok = 0;
	for (int it = 0; it < 20000; it++) {
		memcpy(buf, seed, n);
		for (int k = 0; k < 3; k++) {
			r ^= r << 13, r ^= r >> 7, r ^= r << 17;
			buf[r % n] = (char)(r >> 32);
		}
		int rc = mx_prom_parse(buf, n - (r >> 40) % 4, NULL, NULL, NULL, err, sizeof(err));
		CHECK(rc == 0 || (rc == -EINVAL && strncmp(err, "line ", 5) == 0) || rc == -E2BIG);
		ok += rc == 0;
	}
	CHECK(ok > 0);
}

int main(void)
{
	RUN(test_mutations);
	RUN(test_vllm_exposition);
	RUN(test_edges);
	RUN(test_histogram_summary);
	RUN(test_malformed);
	RUN(test_limits);
	RUN(test_many_families_and_stop);
	return harness_done();
}
