/* Unit tests for the shared JSON step scanner (user/sched/jscan.h): where a
 * scan fails and with which Go text, the same wherever the input is cut
 * (the early pick resumes it chunk by chunk), and the eight-byte string runs
 * that bj_check and early_feed skip string contents with. */
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "sched/jscan.h"

/* Feeds |in| in pieces of |chunk| bytes, skipping string runs like the
 * callers do; returns the offset of the failing byte, |n| for a failure at
 * the end of input, or -1 when the document is valid. */
static long scan_pieces(const char *in, size_t n, size_t chunk, jscan *s)
{
	const unsigned char *u = (const unsigned char *)in;
	jscan_init(s);
	for (size_t at = 0; at < n; at += chunk) {
		size_t end = at + chunk < n ? at + chunk : n;
		for (size_t i = at; i < end; i++) {
			if (s->step == JS_STR) {
				i += jscan_str_run(u + i, end - i);
				if (i == end)
					break;
			}
			if (jscan_step(s, u[i]) < 0)
				return (long)i;
		}
	}
	return jscan_eof(s) < 0 ? (long)n : -1;
}

static void test_error_offsets(void)
{
	static const struct {
		const char *in;
		long at;
		const char *err;
	} cases[] = {
		{"{\"model\":\"m\" \"x\":1}", 13, "invalid character '\"' after object key:value pair"},
		{"{\"a\":[1,2,]}", 10, "invalid character ']' looking for beginning of value"},
		{"{\"a\":\"long string text \x01\"}", 23, "invalid character '\\x01' in string literal"},
		{"[\"\\u00e9\\uZ\"]", 10, "invalid character 'Z' in \\u hexadecimal character escape"},
		{"{\"n\":-01}", 7, "invalid character '1' after object key:value pair"},
		{"{\"n\":1.5e+x}", 10, "invalid character 'x' in exponent of numeric literal"},
		{"[true,fals,null]", 10, "invalid character ',' in literal false (expecting 'e')"},
		{"[null,nulx]", 9, "invalid character 'x' in literal null (expecting 'l')"},
		{"{\"a\":{\"b\":[]}}}", 14, "invalid character '}' after top-level value"},
		{"{\"a\":\"unterminated", 18, "unexpected end of JSON input"},
		{"{\"a\":\"esc\\", 10, "invalid character ' ' in string escape code"},
		{"12.", 3, "invalid character ' ' after decimal point in numeric literal"},
		{" 12 ", -1, ""},
		{"{\"a\":[{},[],\"\",0,-1.5E-3,true,false,null]}", -1, ""},
	};
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		size_t n = strlen(cases[k].in);
		for (size_t chunk = 1; chunk <= n + 1; chunk++) {
			jscan s;
			long at = scan_pieces(cases[k].in, n, chunk, &s);
			CHECK_INT(at, cases[k].at);
			char err[128] = "";
			if (at >= 0)
				jscan_error(&s, err, sizeof(err));
			CHECK_STR(err, cases[k].err);
		}
	}
}

/* Every byte moves the state the same way whether the input comes whole or
 * one byte at a time: what early.c's member tracking relies on. */
static void test_resume_same_states(void)
{
	static const char doc[] = "{\"model\" : \"m\\\"x\", \"n\":[1e3, {\"k\":-0.5}], \"t\":true}";
	size_t n = sizeof(doc) - 1;
	int whole[sizeof(doc)], split[sizeof(doc)];
	uint32_t dwhole[sizeof(doc)], dsplit[sizeof(doc)];
	jscan a, b;
	jscan_init(&a);
	for (size_t i = 0; i < n; i++) {
		CHECK_INT(jscan_step(&a, (unsigned char)doc[i]), 0);
		whole[i] = a.step;
		dwhole[i] = a.depth;
	}
	CHECK_INT(jscan_eof(&a), 0);
	jscan_init(&b);
	for (size_t i = 0; i < n; i++) {
		jscan c = b; /* a resumed scan is only its struct */
		CHECK_INT(jscan_step(&c, (unsigned char)doc[i]), 0);
		split[i] = c.step;
		dsplit[i] = c.depth;
		b = c;
	}
	CHECK(memcmp(whole, split, n * sizeof(int)) == 0);
	CHECK(memcmp(dwhole, dsplit, n * sizeof(uint32_t)) == 0);
	CHECK(b.end_top);
	/* The number inside the array ends on the ',' (a number state before, not
	 * after), the nested object pops back to depth 2. */
	CHECK(jscan_in_number(whole[26]) && whole[27] == JS_BEGIN_VALUE);
	CHECK_INT(dwhole[38], 2);
}

static void test_str_run(void)
{
	char buf[64];
	static const char stops[] = {'"', '\\', '\0', '\x01', '\n', '\x1f'};
	for (size_t k = 0; k < sizeof(stops); k++) {
		for (size_t pos = 0; pos < 40; pos++) {
			memset(buf, 'a', sizeof(buf));
			/* Bytes a run takes: DEL and UTF-8 around the stop. */
			buf[pos ? pos - 1 : 1] = '\x7f';
			buf[pos + 1] = '\xc3';
			buf[pos + 2] = '\xa9';
			buf[pos] = stops[k];
			CHECK_INT(jscan_str_run((const unsigned char *)buf, sizeof(buf)), pos);
			CHECK_INT(jscan_str_run((const unsigned char *)buf, pos), pos);
		}
	}
	memset(buf, ' ', sizeof(buf));
	CHECK_INT(jscan_str_run((const unsigned char *)buf, sizeof(buf)), sizeof(buf));
}

int main(void)
{
	RUN(test_error_offsets);
	RUN(test_resume_same_states);
	RUN(test_str_run);
	return harness_done();
}
