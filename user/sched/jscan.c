/* jscan: the out-of-line parts of Go's checkValid (jscan.h): the end of
 * input and the error texts. */
#include "sched/jscan.h"

#include <stdio.h>

const char *const jscan_lit_ctx[JS_NUL - JS_T + 1] = {
	[JS_T - JS_T] = "in literal true (expecting 'r')",
	[JS_TR - JS_T] = "in literal true (expecting 'u')",
	[JS_TRU - JS_T] = "in literal true (expecting 'e')",
	[JS_F - JS_T] = "in literal false (expecting 'a')",
	[JS_FA - JS_T] = "in literal false (expecting 'l')",
	[JS_FAL - JS_T] = "in literal false (expecting 's')",
	[JS_FALS - JS_T] = "in literal false (expecting 'e')",
	[JS_N - JS_T] = "in literal null (expecting 'u')",
	[JS_NU - JS_T] = "in literal null (expecting 'l')",
	[JS_NUL - JS_T] = "in literal null (expecting 'l')",
};

int jscan_eof(jscan *s)
{
	if (s->step == JS_ERROR)
		return -1;
	if (s->end_top)
		return 0;
	/* A failure here keeps its own text, as in Go. */
	if (jscan_step(s, ' ') < 0 || !s->end_top)
		return -1;
	return 0;
}

/* Go's quoteChar: the byte as a rune in single quotes, escaped the way
 * strconv.Quote does (U+0080..U+00FF are runes, printed as UTF-8 when
 * printable). */
static int quote_char(char *out, size_t cap, unsigned char c)
{
	static const char hex[] = "0123456789abcdef";
	if (c == '\'')
		return snprintf(out, cap, "'\\''");
	if (c == '"')
		return snprintf(out, cap, "'\"'");
	if (c == '\\')
		return snprintf(out, cap, "'\\\\'");
	if (c >= 0x20 && c < 0x7f)
		return snprintf(out, cap, "'%c'", c);
	switch (c) {
	case '\a': return snprintf(out, cap, "'\\a'");
	case '\b': return snprintf(out, cap, "'\\b'");
	case '\f': return snprintf(out, cap, "'\\f'");
	case '\n': return snprintf(out, cap, "'\\n'");
	case '\r': return snprintf(out, cap, "'\\r'");
	case '\t': return snprintf(out, cap, "'\\t'");
	case '\v': return snprintf(out, cap, "'\\v'");
	}
	if (c < 0x20 || c == 0x7f)
		return snprintf(out, cap, "'\\x%c%c'", hex[c >> 4], hex[c & 15]);
	/* C1 controls, NO-BREAK SPACE and SOFT HYPHEN are not printable. */
	if (c < 0xa0 || c == 0xa0 || c == 0xad)
		return snprintf(out, cap, "'\\u00%c%c'", hex[c >> 4], hex[c & 15]);
	return snprintf(out, cap, "'%c%c'", 0xc0 | (c >> 6), 0x80 | (c & 0x3f));
}

void jscan_error(const jscan *s, char *err, size_t errlen)
{
	if (!err || !errlen)
		return;
	if (!s->ctx) {
		snprintf(err, errlen, "unexpected end of JSON input");
		return;
	}
	char q[16];
	quote_char(q, sizeof(q), s->errc);
	snprintf(err, errlen, "invalid character %s %s", q, s->ctx);
}
