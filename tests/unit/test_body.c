/* Unit tests for the JSON body scanner (user/sched/body.c) and the response
 * side (user/sched/response.c): Go error texts, typed validation, string
 * decoding, numbers, the in-place model rewrite, usage parsing and the
 * rewrite-back. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "sched/body.h"
#include "sched/sched.h"

static char errbuf[512];

/* Go's checkValid text for |in| (or "" when valid). */
static const char *check(const char *in, size_t n)
{
	errbuf[0] = '\0';
	if (bj_check(in, n, errbuf, sizeof(errbuf)) == 0)
		return "";
	return errbuf;
}

#define CHECK_GO(in, want) CHECK_STR(check(in, sizeof(in) - 1), want)

static void test_syntax_errors(void)
{
	CHECK_GO("no healthy upstream", "invalid character 'o' in literal null (expecting 'u')");
	CHECK_GO("", "unexpected end of JSON input");
	CHECK_GO("  \n\t", "unexpected end of JSON input");
	CHECK_GO("{", "unexpected end of JSON input");
	CHECK_GO("[", "unexpected end of JSON input");
	CHECK_GO("\"abc", "unexpected end of JSON input");
	CHECK_GO("{\"a\":1", "unexpected end of JSON input");
	CHECK_GO("{\"a\"", "unexpected end of JSON input");
	CHECK_GO("x", "invalid character 'x' looking for beginning of value");
	CHECK_GO("{\"a\" 1}", "invalid character '1' after object key");
	CHECK_GO("{\"a\":1 2}", "invalid character '2' after object key:value pair");
	CHECK_GO("[1 2]", "invalid character '2' after array element");
	CHECK_GO("{} x", "invalid character 'x' after top-level value");
	CHECK_GO("{}}", "invalid character '}' after top-level value");
	CHECK_GO("01", "invalid character '1' after top-level value");
	CHECK_GO("{1:2}", "invalid character '1' looking for beginning of object key string");
	CHECK_GO("{\"a\":1,}", "invalid character '}' looking for beginning of object key string");
	CHECK_GO("{\"a\":}", "invalid character '}' looking for beginning of value");
	CHECK_GO("[,]", "invalid character ',' looking for beginning of value");
	CHECK_GO("[1,]", "invalid character ']' looking for beginning of value");
	CHECK_GO("\"a\x01\"", "invalid character '\\x01' in string literal");
	CHECK_GO("\"\t\"", "invalid character '\\t' in string literal");
	CHECK_GO("\"\n\"", "invalid character '\\n' in string literal");
	CHECK_GO("\"\\x\"", "invalid character 'x' in string escape code");
	CHECK_GO("\"\\'\"", "invalid character '\\'' in string escape code");
	CHECK_GO("\"\\u12g4\"", "invalid character 'g' in \\u hexadecimal character escape");
	CHECK_GO("\"\\u\"", "invalid character '\"' in \\u hexadecimal character escape");
	CHECK_GO("-a", "invalid character 'a' in numeric literal");
	CHECK_GO("-", "invalid character ' ' in numeric literal");
	CHECK_GO("1.a", "invalid character 'a' after decimal point in numeric literal");
	CHECK_GO("1.", "invalid character ' ' after decimal point in numeric literal");
	CHECK_GO("1ea", "invalid character 'a' in exponent of numeric literal");
	CHECK_GO("1e+", "invalid character ' ' in exponent of numeric literal");
	CHECK_GO("tru", "invalid character ' ' in literal true (expecting 'e')");
	CHECK_GO("trux", "invalid character 'x' in literal true (expecting 'e')");
	CHECK_GO("tx", "invalid character 'x' in literal true (expecting 'r')");
	CHECK_GO("fals3", "invalid character '3' in literal false (expecting 'e')");
	CHECK_GO("fx", "invalid character 'x' in literal false (expecting 'a')");
	CHECK_GO("nul", "invalid character ' ' in literal null (expecting 'l')");
	CHECK_GO("'a'", "invalid character '\\'' looking for beginning of value");
	CHECK_GO("\\", "invalid character '\\\\' looking for beginning of value");
	CHECK_GO("\x7f", "invalid character '\\x7f' looking for beginning of value");
	CHECK_GO("\x1b", "invalid character '\\x1b' looking for beginning of value");
	CHECK_GO("\v", "invalid character '\\v' looking for beginning of value");
	CHECK_GO("\x85", "invalid character '\\u0085' looking for beginning of value");
	CHECK_GO("\xa0", "invalid character '\\u00a0' looking for beginning of value");
	CHECK_GO("\xad", "invalid character '\\u00ad' looking for beginning of value");
	/* Bytes from 0xa1 are printable runes: printed as their UTF-8. */
	CHECK_GO("\xc3\xa9", "invalid character '\xc3\x83' looking for beginning of value");
	CHECK_GO("\xff", "invalid character '\xc3\xbf' looking for beginning of value");
	CHECK_GO("{\"a\":tru}", "invalid character '}' in literal true (expecting 'e')");
	/* An embedded NUL is a byte like any other. */
	CHECK_STR(check("{}\0", 3), "invalid character '\\x00' after top-level value");
}

static void test_valid_documents(void)
{
	CHECK_GO("{}", "");
	CHECK_GO(" \r\n\t{ } \n", "");
	CHECK_GO("[]", "");
	CHECK_GO("null", "");
	CHECK_GO("0", "");
	CHECK_GO("-0.5e-10", "");
	CHECK_GO("1E+2", "");
	CHECK_GO("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\"", "");
	CHECK_GO("{\"a\":[1,{\"b\":null},true,false,\"x\"],\"c\":{}}", "");
	/* Raw invalid UTF-8 inside strings is accepted by the scanner. */
	CHECK_GO("\"\xff\xfe\"", "");
	CHECK_GO("123456789012345678901234567890e999999999", "");
}

static char *nested(size_t depth, char open, char close)
{
	char *s = malloc(2 * depth + 1);
	memset(s, open, depth);
	memset(s + depth, close, depth);
	s[2 * depth] = '\0';
	return s;
}

static void test_nesting_limit(void)
{
	char *ok = nested(BJ_MAX_DEPTH, '[', ']');
	CHECK_STR(check(ok, strlen(ok)), "");
	free(ok);
	char *deep = nested(BJ_MAX_DEPTH + 1, '[', ']');
	CHECK_STR(check(deep, strlen(deep)), "invalid character '[' exceeded max depth");
	free(deep);
	/* Objects count the same way. */
	size_t d = BJ_MAX_DEPTH + 1;
	char *obj = malloc(6 * d + 2);
	size_t o = 0;
	for (size_t i = 0; i < d; i++) {
		memcpy(obj + o, "{\"a\":", 5);
		o += 5;
	}
	obj[o] = '\0';
	CHECK_STR(check(obj, o), "invalid character '{' exceeded max depth");
	free(obj);
}

static const char *unq(const char *lit)
{
	static char out[256];
	bj_val v = bj_value(lit, strlen(lit));
	size_t n = bj_unquote(&v, out);
	out[n] = '\0';
	return out;
}

static void test_unquote(void)
{
	CHECK_STR(unq("\"plain\""), "plain");
	CHECK_STR(unq("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\""), "\"\\/\b\f\n\r\t");
	CHECK_STR(unq("\"\\u00e9\\u0041\""), "\xc3\xa9" "A");
	CHECK_STR(unq("\"\\ud83d\\ude00\""), "\xf0\x9f\x98\x80");
	CHECK_STR(unq("\"\\uD83D\\uDE00\""), "\xf0\x9f\x98\x80");
	/* Lone and mismatched surrogates become U+FFFD, like Go. */
	CHECK_STR(unq("\"\\ud83d\""), "\xef\xbf\xbd");
	CHECK_STR(unq("\"\\ud83dx\""), "\xef\xbf\xbdx");
	CHECK_STR(unq("\"\\ude00\""), "\xef\xbf\xbd");
	CHECK_STR(unq("\"\\ud83d\\u0041\""), "\xef\xbf\xbd" "A");
	CHECK_STR(unq("\"\\ud83d\\ud83d\\ude00\""), "\xef\xbf\xbd\xf0\x9f\x98\x80");
	/* Invalid UTF-8 bytes each become U+FFFD. */
	CHECK_STR(unq("\"a\xff" "b\""), "a\xef\xbf\xbd" "b");
	CHECK_STR(unq("\"\xc0\x80\""), "\xef\xbf\xbd\xef\xbf\xbd");
	CHECK_STR(unq("\"\xed\xa0\x80\""), "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
	CHECK_STR(unq("\"\xe2\x82\""), "\xef\xbf\xbd\xef\xbf\xbd");
	CHECK_STR(unq("\"\xf4\x90\x80\x80\""), "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
	CHECK_STR(unq("\"\xf0\x9f\x98\x80 ok\""), "\xf0\x9f\x98\x80 ok");
	CHECK_STR(unq("\"\""), "");
}

static bool fold(const char *lit, const char *name)
{
	bj_val v = bj_value(lit, strlen(lit));
	return bj_key_fold(&v, name);
}

static bool streq(const char *lit, const char *name)
{
	bj_val v = bj_value(lit, strlen(lit));
	return bj_str_eq(&v, name);
}

static void test_key_matching(void)
{
	CHECK(fold("\"messages\"", "messages"));
	CHECK(fold("\"Messages\"", "messages"));
	CHECK(fold("\"MESSAGES\"", "messages"));
	CHECK(fold("\"\\u006dessages\"", "messages"));
	CHECK(fold("\"me\xc5\xbf\xc5\xbf" "ages\"", "messages")); /* long s */
	CHECK(fold("\"chat_template_\xe2\x84\xaa" "wargs\"", "chat_template_kwargs")); /* Kelvin */
	CHECK(fold("\"\xc4\xb1tems\"", "items"));     /* dotless i */
	CHECK(fold("\"\xc4\xb0TEMS\"", "items"));     /* dotted capital I */
	CHECK(!fold("\"messages \"", "messages"));
	CHECK(!fold("\"message\"", "messages"));
	CHECK(!fold("\"m\xc3\xa9ssages\"", "messages"));
	CHECK(!fold("\"messages\\u0000\"", "messages"));
	CHECK(streq("\"model\"", "model"));
	CHECK(streq("\"\\u006dodel\"", "model"));
	CHECK(!streq("\"Model\"", "model"));
	CHECK(!streq("\"model\\u0000\"", "model"));
	CHECK(!streq("\"mode\"", "model"));
}

static void test_numbers(void)
{
	CHECK(!bj_float_overflows("1e308", 5));
	CHECK(bj_float_overflows("1e309", 5));
	CHECK(bj_float_overflows("-1e400", 6));
	CHECK(!bj_float_overflows("1e-400", 6));
	CHECK(!bj_float_overflows("1.7976931348623157e308", 22));
	/* Rounds down to MaxFloat64, below the halfway point. */
	CHECK(!bj_float_overflows("1.7976931348623158e308", 22));
	CHECK(bj_float_overflows("1.7976931348623159e308", 22));
	{
		const char *t = "0.00000000000000000000000000001e330";
		CHECK(!bj_float_overflows(t, strlen(t)));
		const char *u = "0.00000000000000000000000000001e340";
		CHECK(bj_float_overflows(u, strlen(u)));
	}
	char big[500];
	big[0] = '1';
	memset(big + 1, '0', 309);
	CHECK(bj_float_overflows(big, 310));
	CHECK(!bj_float_overflows(big, 309));
	int64_t v;
	bj_val n = bj_value("9223372036854775807", 19);
	CHECK(bj_int64(&n, &v) && v == INT64_MAX);
	n = bj_value("-9223372036854775808", 20);
	CHECK(bj_int64(&n, &v) && v == INT64_MIN);
	n = bj_value("9223372036854775808", 19);
	CHECK(!bj_int64(&n, &v));
	n = bj_value("7.0", 3);
	CHECK(!bj_int64(&n, &v));
	n = bj_value("1e2", 3);
	CHECK(!bj_int64(&n, &v));
	n = bj_value("0.25", 4);
	CHECK(bj_double(&n) == 0.25);
	n = bj_value("-12.5e1", 7);
	CHECK(bj_double(&n) == -125.0);
}

static void test_quote(void)
{
	char out[128];
	size_t n = bj_quote("a\"b\\c\n\t\x01\x7f", 9, out);
	out[n] = '\0';
	CHECK_STR(out, "\"a\\\"b\\\\c\\n\\t\\u0001\x7f\"");
	n = bj_quote("\xe2\x80\xa8x\xff<&>", 8, out);
	out[n] = '\0';
	CHECK_STR(out, "\"\\u2028x\\ufffd<&>\"");
	n = bj_quote("\xc3\xa9\b\f\r", 5, out);
	out[n] = '\0';
	CHECK_STR(out, "\"\xc3\xa9\\b\\f\\r\"");
}

/* body_parse_request with the given API; returns the error text or "". */
static body_req req;

static const char *parse(const char *body, enum sched_api api)
{
	errbuf[0] = '\0';
	if (body_parse_request(body, strlen(body), api, &req, errbuf, sizeof(errbuf)) == 0)
		return "";
	return errbuf;
}

#define COMPL SCHED_API_COMPLETIONS
#define CHAT SCHED_API_CHAT
#define RESP SCHED_API_RESPONSES
#define CONV SCHED_API_CONVERSATIONS
#define EMB SCHED_API_EMBEDDINGS

static void test_bodymap_errors(void)
{
	CHECK_STR(parse("no healthy upstream", COMPL),
		  "error unmarshaling request bodyMap: invalid character 'o' in literal null "
		  "(expecting 'u')");
	CHECK_STR(parse("", COMPL),
		  "error unmarshaling request bodyMap: unexpected end of JSON input");
	CHECK_STR(parse("\"x\"", COMPL),
		  "error unmarshaling request bodyMap: json: cannot unmarshal string into Go value "
		  "of type map[string]interface {}");
	CHECK_STR(parse(" 5 ", COMPL),
		  "error unmarshaling request bodyMap: json: cannot unmarshal number into Go value "
		  "of type map[string]interface {}");
	CHECK_STR(
		parse("true", CHAT),
		"error unmarshaling request bodyMap: json: cannot unmarshal bool into Go value of "
		"type map[string]interface {}");
	CHECK_STR(parse("[{\"prompt\":\"x\"}]", COMPL),
		  "error unmarshaling request bodyMap: json: cannot unmarshal array into Go value "
		  "of type map[string]interface {}");
	/* Every number of the map decodes to float64: the first too big fails. */
	CHECK_STR(
		parse("{\"prompt\":\"x\",\"a\":[1,{\"b\":-2e400}],\"c\":1e999}", COMPL),
		"error unmarshaling request bodyMap: json: cannot unmarshal number -2e400 into Go "
		"value of type float64");
	CHECK_STR(parse("{\"prompt\":\"x\",\"s\":\"1e999\",\"n\":1e308}", COMPL), "");
	/* null is a valid (nil) map: the API validation speaks. */
	CHECK_STR(parse("null", COMPL), "invalid completions request: must have prompt field");
}

static void test_completions_validation(void)
{
	const char *bad = "invalid completions request: must have prompt field";
	CHECK_STR(parse("{\"model\":\"m\",\"prompt\":\"hi\"}", COMPL), "");
	CHECK_STR(parse("{\"model\":\"m\"}", COMPL), bad);
	CHECK_STR(parse("{\"prompt\":\"\"}", COMPL), bad);
	CHECK_STR(parse("{\"prompt\":[]}", COMPL), bad);
	CHECK_STR(parse("{\"prompt\":[\"a\",\"b\"]}", COMPL), "");
	CHECK_STR(parse("{\"prompt\":[null]}", COMPL), "");
	CHECK_STR(parse("{\"prompt\":[\"a\",1]}", COMPL), bad);
	CHECK_STR(parse("{\"prompt\":[[\"a\"]]}", COMPL), bad);
	CHECK_STR(parse("{\"prompt\":null}", COMPL), bad);
	CHECK_STR(parse("{\"prompt\":5}", COMPL), bad);
	CHECK_STR(parse("{\"prompt\":{}}", COMPL), bad);
	CHECK_STR(parse("{\"Prompt\":\"hi\"}", COMPL), "");
	CHECK_STR(parse("{\"\\u0070rompt\":\"hi\"}", COMPL), "");
	CHECK_STR(parse("{\"prompt\":\"hi\",\"cache_salt\":5}", COMPL), bad);
	CHECK_STR(parse("{\"prompt\":\"hi\",\"cache_salt\":null}", COMPL), "");
	/* Duplicates: the later member is decoded into the same field. */
	CHECK_STR(parse("{\"prompt\":\"hi\",\"prompt\":\"\"}", COMPL), bad);
	CHECK_STR(parse("{\"prompt\":[\"a\"],\"prompt\":\"\"}", COMPL), "");
	/* Unknown members of any type are ignored. */
	CHECK_STR(parse("{\"prompt\":\"hi\",\"max_tokens\":\"x\",\"x\":{\"y\":[]}}", COMPL), "");
}

static void test_chat_validation(void)
{
	const char *bad = "invalid chat completions request: must have valid messages field";
	CHECK_STR(parse("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", CHAT), "");
	CHECK_STR(parse("{\"messages\":[]}", CHAT), bad);
	CHECK_STR(parse("{}", CHAT), bad);
	CHECK_STR(parse("{\"messages\":null}", CHAT), bad);
	CHECK_STR(parse("{\"messages\":\"hi\"}", CHAT), bad);
	CHECK_STR(parse("{\"messages\":[1]}", CHAT), bad);
	CHECK_STR(parse("{\"messages\":[null]}", CHAT), "");
	CHECK_STR(parse("{\"messages\":[{}]}", CHAT), "");
	CHECK_STR(parse("{\"messages\":[{\"role\":1}]}", CHAT), bad);
	CHECK_STR(parse("{\"messages\":[{\"content\":5}]}", CHAT), bad);
	CHECK_STR(parse("{\"messages\":[{\"content\":null}]}", CHAT), "");
	CHECK_STR(parse("{\"messages\":[{\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
			"{\"type\":\"image_url\",\"image_url\":{\"url\":\"u\"}}]}]}",
			CHAT),
		  "");
	CHECK_STR(parse("{\"messages\":[{\"content\":[{\"image_url\":\"u\"}]}]}", CHAT), bad);
	CHECK_STR(parse("{\"messages\":[{\"content\":[{\"input_audio\":{\"data\":1}}]}]}", CHAT),
		  bad);
	CHECK_STR(parse("{\"messages\":[{\"content\":[5]}]}", CHAT), bad);
	CHECK_STR(parse("{\"me\xc5\xbf\xc5\xbf" "ages\":[{}]}", CHAT), "");
	const char *ok = "{\"messages\":[{}],";
	char b[256];
	const char *tails[][2] = {
		{"\"tools\":[]}", ""},
		{"\"tools\":{}}", "bad"},
		{"\"documents\":\"d\"}", "bad"},
		{"\"chat_template\":1}", "bad"},
		{"\"chat_template\":\"t\"}", ""},
		{"\"add_generation_prompt\":\"yes\"}", "bad"},
		{"\"continue_final_message\":true}", ""},
		{"\"return_assistant_tokens_mask\":0}", "bad"},
		{"\"chat_template_kwargs\":[]}", "bad"},
		{"\"chat_template_kwargs\":{\"a\":1}}", ""},
		{"\"Tools\":null}", ""},
	};
	for (size_t i = 0; i < sizeof(tails) / sizeof(tails[0]); i++) {
		snprintf(b, sizeof(b), "%s%s", ok, tails[i][0]);
		CHECK_STR(parse(b, CHAT), tails[i][1][0] ? bad : "");
	}
}

static void test_other_apis(void)
{
	const char *resp = "invalid responses request: must have input field";
	const char *conv = "invalid conversations request: must have items field";
	const char *emb = "invalid embeddings request: must have input field";
	CHECK_STR(parse("{\"input\":\"hi\"}", RESP), "");
	CHECK_STR(parse("{\"input\":[{\"role\":\"user\"}],\"instructions\":5,\"tools\":1}", RESP),
		  "");
	CHECK_STR(parse("{\"input\":null}", RESP), resp);
	CHECK_STR(parse("{\"input\":\"x\",\"input\":null}", RESP), resp);
	CHECK_STR(parse("{}", RESP), resp);
	CHECK_STR(parse("{\"input\":\"x\",\"cache_salt\":[]}", RESP), resp);
	CHECK_STR(parse("{\"items\":[{\"type\":\"message\",\"content\":[1]}]}", CONV), "");
	CHECK_STR(parse("{\"items\":[]}", CONV), conv);
	CHECK_STR(parse("{\"items\":[\"x\"]}", CONV), conv);
	CHECK_STR(parse("{\"items\":[{\"role\":5}]}", CONV), conv);
	CHECK_STR(parse("{\"items\":[{}],\"metadata\":[]}", CONV), conv);
	CHECK_STR(parse("{\"input\":[\"a\",\"b\"]}", EMB), "");
	CHECK_STR(parse("{\"input\":0}", EMB), "");
	CHECK_STR(parse("{\"prompt\":\"x\"}", EMB), emb);
}

static void test_model_and_stream(void)
{
	CHECK_STR(
		parse("{\"model\":\"a\",\"prompt\":\"x\",\"model\":\"b\",\"stream\":true}", COMPL),
		"");
	char out[64];
	size_t n = bj_unquote(&req.model, out);
	CHECK(n == 1 && out[0] == 'b');
	CHECK(req.stream);
	CHECK_STR(parse("{\"model\":5,\"prompt\":\"x\",\"stream\":\"true\"}", COMPL), "");
	CHECK(req.model.t == BJ_NUMBER);
	CHECK(!req.stream);
	/* "model" is an exact map key: "Model" is another member. */
	CHECK_STR(parse("{\"Model\":\"m\",\"prompt\":\"x\",\"stream\":true,\"stream\":false}",
			COMPL),
		  "");
	CHECK(req.model.t == BJ_NONE);
	CHECK(!req.stream);
	CHECK_STR(parse("{\"\\u006dodel\":\"esc\",\"prompt\":\"x\"}", COMPL), "");
	CHECK(req.model.t == BJ_STRING);
	CHECK(req.prompt.t == BJ_STRING);
}

static void test_rewrite_model(void)
{
	const char *body =
		"{ \"prompt\":\"x\", \"model\" : \"a\\u0062c\", \"n\":1.50, \"u\":\"\xc3\xa9\" }";
	CHECK_STR(parse(body, COMPL), "");
	arena a;
	arena_init(&a, 4096);
	const char *out;
	size_t n;
	CHECK(body_rewrite_model(body, strlen(body), &req.model, "new\"q", 5, &a, &out, &n) == 0);
	CHECK_STR(out,
		  "{ \"prompt\":\"x\", \"model\" : \"new\\\"q\", \"n\":1.50, \"u\":\"\xc3\xa9\" }");
	CHECK_INT(n, strlen(out));
	/* The rewritten body is valid JSON whose model decodes to the target. */
	CHECK_STR(parse(out, COMPL), "");
	char dec[64];
	size_t dn = bj_unquote(&req.model, dec);
	CHECK(dn == 5 && memcmp(dec, "new\"q", 5) == 0);
	const char *first = "{\"model\":\"m\",\"prompt\":\"p\"}";
	CHECK_STR(parse(first, COMPL), "");
	CHECK(body_rewrite_model(first, strlen(first), &req.model, "\xe2\x80\xa8", 3, &a, &out,
				 &n) == 0);
	CHECK_STR(out, "{\"model\":\"\\u2028\",\"prompt\":\"p\"}");
	arena_free(&a);
}

static void test_usage_json(void)
{
	sched_usage u = {0};
	const char *chat = "{\"object\":\"chat.completion\",\"usage\":{\"prompt_tokens\":7,"
			   "\"completion_tokens\":10,\"total_tokens\":17,\"input_tokens\":99}}";
	sched_usage_parse_json(chat, strlen(chat), &u);
	CHECK(u.found);
	CHECK_INT(u.prompt_tokens, 7);
	CHECK_INT(u.completion_tokens, 10);
	CHECK_INT(u.total_tokens, 17);
	CHECK(!u.has_cached);

	memset(&u, 0, sizeof(u));
	const char *resp = "{\"object\":\"response\",\"usage\":{\"input_tokens\":31,"
			   "\"output_tokens\":5.9,\"total_tokens\":36,\"prompt_tokens\":1,"
			   "\"prompt_token_details\":{\"cached_tokens\":16}}}";
	sched_usage_parse_json(resp, strlen(resp), &u);
	CHECK(u.found);
	CHECK_INT(u.prompt_tokens, 31);
	CHECK_INT(u.completion_tokens, 5);
	CHECK_INT(u.total_tokens, 36);
	CHECK(u.has_cached);
	CHECK_INT(u.cached_tokens, 16);

	/* Unknown object: input/output preferred, else prompt/completion. */
	memset(&u, 0, sizeof(u));
	const char *unk = "{\"usage\":{\"prompt_tokens\":3,\"output_tokens\":4,"
			  "\"completion_tokens\":8,\"input_tokens\":null}}";
	sched_usage_parse_json(unk, strlen(unk), &u);
	CHECK(u.found);
	CHECK_INT(u.prompt_tokens, 3);
	CHECK_INT(u.completion_tokens, 4);
	CHECK_INT(u.total_tokens, 0);

	/* Nothing found leaves |u| untouched. */
	sched_usage keep = {.found = true, .prompt_tokens = 42};
	const char *none[] = { "{\"usage\":null}",	    "{\"id\":1}",
			       "no healthy upstream",	    "{\"usage\":5}",
			       "[{\"usage\":{}}]",	    "",
			       "{\"usage\":{},\"x\":1e400}" };
	for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++) {
		u = keep;
		sched_usage_parse_json(none[i], strlen(none[i]), &u);
		CHECK_INT(u.prompt_tokens, 42);
	}
}

static void test_usage_sse(void)
{
	sched_usage u = {0};
	const char *c1 = "data: {}";
	sched_usage_parse_sse(c1, strlen(c1), &u);
	CHECK(!u.found);
	const char *c2 = "data: {\"usage\":{\"prompt_tokens\":7,\"total_tokens\":17,"
			 "\"completion_tokens\":10}}\ndata: [DONE]";
	sched_usage_parse_sse(c2, strlen(c2), &u);
	CHECK(u.found);
	CHECK_INT(u.prompt_tokens, 7);
	CHECK_INT(u.completion_tokens, 10);
	CHECK_INT(u.total_tokens, 17);

	/* vLLM: usage null on chunks, then a chunk with usage; CRLF lines. */
	memset(&u, 0, sizeof(u));
	const char *c3 = "data: {\"object\":\"text_completion\",\"usage\":null}\r\n\r\n"
			 "data: {\"usage\":{\"Prompt_Tokens\":2,\"completion_tokens\":3,"
			 "\"prompt_token_details\":{\"cached_tokens\":1}}}\r\n";
	sched_usage_parse_sse(c3, strlen(c3), &u);
	CHECK(u.found);
	CHECK_INT(u.prompt_tokens, 2);
	CHECK_INT(u.completion_tokens, 3);
	CHECK(u.has_cached);
	CHECK_INT(u.cached_tokens, 1);

	/* Typed ints: a fraction fails that line only. */
	memset(&u, 0, sizeof(u));
	const char *c4 = "data: {\"usage\":{\"prompt_tokens\":7.5}}\n"
			 "data:{\"usage\":{\"prompt_tokens\":1}}\n"
			 "data: {\"usage\":{\"prompt_tokens\":9}}";
	sched_usage_parse_sse(c4, strlen(c4), &u);
	CHECK(u.found);
	CHECK_INT(u.prompt_tokens, 9);

	/* Responses API: usage nested in response.completed. */
	memset(&u, 0, sizeof(u));
	const char *c5 =
		"event: response.created\n"
		"data: {\"type\":\"response.created\",\"response\":{\"usage\":null}}\n\n"
		"event: response.completed\n"
		"data: {\"response\":{\"object\":\"response\",\"usage\":{\"input_tokens\":31,"
		"\"output_tokens\":12,\"total_tokens\":43}},\"type\":\"response.completed\"}\n";
	sched_usage_parse_sse(c5, strlen(c5), &u);
	CHECK(u.found);
	CHECK_INT(u.prompt_tokens, 31);
	CHECK_INT(u.completion_tokens, 12);
	CHECK_INT(u.total_tokens, 43);

	/* The decode target is shared by the lines of a chunk: a type seen
	 * on one line and the usage on a later one still match. */
	memset(&u, 0, sizeof(u));
	const char *c6 = "data: {\"type\":\"response.completed\"}\n"
			 "data: {\"response\":{\"usage\":{\"input_tokens\":4}}}\n";
	sched_usage_parse_sse(c6, strlen(c6), &u);
	CHECK(u.found);
	CHECK_INT(u.prompt_tokens, 4);

	/* response.usage on another event type is not usage. */
	memset(&u, 0, sizeof(u));
	const char *c7 = "data: {\"type\":\"response.in_progress\",\"response\":{\"usage\":"
			 "{\"input_tokens\":4}}}\n";
	sched_usage_parse_sse(c7, strlen(c7), &u);
	CHECK(!u.found);
}

static void test_rewrite_back(void)
{
	arena a;
	arena_init(&a, 4096);
	sched_str tgt = {"sql-lora-1fdg3", 14}, inc = {"sql-lora", 8};
	const char *b1 = "{\"id\":\"x\",\"model\":\"sql-lora-1fdg3\",\"c\":[{\"model\":\"sql-lora-"
			 "1fdg3\"}]}";
	sched_str r = sched_rewrite_back(b1, strlen(b1), tgt, inc, &a);
	CHECK(r.p != b1);
	CHECK_INT(r.len, strlen(b1) - 12);
	CHECK(r.len == strlen("{\"id\":\"x\",\"model\":\"sql-lora\",\"c\":[{\"model\":\"sql-lora\"}"
			      "]}") &&
	      memcmp(r.p, "{\"id\":\"x\",\"model\":\"sql-lora\",\"c\":[{\"model\":\"sql-lora\"}]}",
		     r.len) == 0);
	/* The one-space form is tried only when the first changed nothing. */
	const char *b2 = "data: {\"model\": \"sql-lora-1fdg3\"}\n\n";
	r = sched_rewrite_back(b2, strlen(b2), tgt, inc, &a);
	CHECK(r.len == strlen("data: {\"model\": \"sql-lora\"}\n\n") &&
	      memcmp(r.p, "data: {\"model\": \"sql-lora\"}\n\n", r.len) == 0);
	const char *b3 = "{\"model\":\"sql-lora-1fdg3\",\"x\":{\"model\": \"sql-lora-1fdg3\"}}";
	r = sched_rewrite_back(b3, strlen(b3), tgt, inc, &a);
	CHECK(r.len == strlen("{\"model\":\"sql-lora\",\"x\":{\"model\": \"sql-lora-1fdg3\"}}"));
	/* No match, equal names or an empty name: the input itself. */
	const char *b4 = "{\"model\":\"other\"}";
	r = sched_rewrite_back(b4, strlen(b4), tgt, inc, &a);
	CHECK(r.p == b4 && r.len == strlen(b4));
	r = sched_rewrite_back(b1, strlen(b1), tgt, tgt, &a);
	CHECK(r.p == b1);
	r = sched_rewrite_back(b1, strlen(b1), tgt, (sched_str){"", 0}, &a);
	CHECK(r.p == b1);
	arena_free(&a);
}

/* The word-at-a-time scans (bj_check's strings, skipping, decoding) at every
 * offset of the special byte, around the 8-byte boundaries; and the bounded
 * decode is a prefix of the full one. */
static void test_string_runs(void)
{
	static const char *const specials[] = {"\\\"", "\\\\", "\\u00e9", "\xc3\xa9", "\xff",
					       "\xf0\x9f\x98\x80", "\\n"};
	static const char *const decoded[] = {"\"", "\\", "\xc3\xa9", "\xc3\xa9",
					      "\xef\xbf\xbd", "\xf0\x9f\x98\x80", "\n"};
	char in[128], want[128], out[3 * 128];
	for (size_t k = 0; k < sizeof(specials) / sizeof(specials[0]); k++) {
		for (size_t off = 0; off < 20; off++) {
			size_t sl = strlen(specials[k]), dl = strlen(decoded[k]);
			size_t n = 0, w = 0;
			in[n++] = '"';
			for (size_t i = 0; i < off; i++)
				in[n++] = want[w++] = (char)('a' + i);
			memcpy(in + n, specials[k], sl);
			n += sl;
			memcpy(want + w, decoded[k], dl);
			w += dl;
			for (size_t i = 0; i < 11; i++)
				in[n++] = want[w++] = 'z';
			in[n++] = '"';
			CHECK_STR(check(in, n), "");
			bj_val v = bj_value(in, n);
			CHECK_INT(v.n, n);
			size_t got = bj_unquote(&v, out);
			CHECK(got == w && memcmp(out, want, w) == 0);
			for (size_t max = 0; max <= w; max++) {
				got = bj_unquote_n(&v, out, max);
				CHECK(got >= max && got <= max + 4 && got <= w);
				CHECK(memcmp(out, want, got) == 0);
			}
			/* A control byte at the same offset ends the string's scan. */
			in[1 + off] = '\x01';
			CHECK_STR(check(in, n), "invalid character '\\x01' in string literal");
		}
	}
	/* Bytes >= 0x80 are not control bytes for the scan. */
	CHECK_STR(check("\"\x80\x9f\xa0\xff\xfe\xe0\xc0\x81\x82\"", 11), "");
}

/* The one pass of body_parse_request: member spans exactly as the value's
 * text (whitespace around it left out, whatever ends it), the float64 check
 * on the numbers that need strtod only, and Go's error order kept. */
static void test_single_pass(void)
{
	const char *b = "{ \"model\" :\t\"m\" ,\n\"prompt\": [ \"a\" , \"b\" ]\r\n, "
			"\"x\":{\"y\":[1,{\"z\":-0.5e-3}]} ,\"cache_salt\":\"s\"  }";
	CHECK_STR(parse(b, COMPL), "");
	CHECK(req.model.t == BJ_STRING && req.model.n == 3 && memcmp(req.model.p, "\"m\"", 3) == 0);
	CHECK(req.prompt.t == BJ_ARRAY && req.prompt.n == 13 &&
	      memcmp(req.prompt.p, "[ \"a\" , \"b\" ]", 13) == 0);
	CHECK(req.cache_salt.t == BJ_STRING && req.cache_salt.n == 3);
	/* The last member of the object, a number and a literal ended by '}'. */
	CHECK_STR(parse("{\"prompt\":\"p\",\"model\":12.5e1}", COMPL), "");
	CHECK(req.model.t == BJ_NUMBER && req.model.n == 6);
	CHECK_STR(parse("{\"prompt\":\"p\",\"stream\":true\n}", COMPL), "");
	CHECK(req.stream);
	/* 308 digits fit, 309 nines do not. */
	char big[400];
	int o = snprintf(big, sizeof(big), "{\"prompt\":\"p\",\"n\":");
	for (int i = 0; i < 308; i++)
		big[o++] = '9';
	snprintf(big + o, sizeof(big) - (size_t)o, "}");
	CHECK_STR(parse(big, COMPL), "");
	snprintf(big + o, sizeof(big) - (size_t)o, "9}");
	static const char want[] = "error unmarshaling request bodyMap: json: cannot unmarshal "
				   "number 999";
	CHECK(strncmp(parse(big, COMPL), want, sizeof(want) - 1) == 0);
	CHECK_STR(parse("{\"prompt\":\"p\",\"n\":[0.1E+308,1E308,-1e-400]}", COMPL), "");
	CHECK_STR(parse("{\"prompt\":\"p\",\"n\":[1,2E309]}", COMPL),
		  "error unmarshaling request bodyMap: json: cannot unmarshal number 2E309 into Go "
		  "value of type float64");
	/* A syntax error after an overflow and a typed error still wins. */
	CHECK_STR(parse("{\"prompt\":5,\"n\":1e999,}", COMPL),
		  "error unmarshaling request bodyMap: invalid character '}' looking for beginning "
		  "of object key string");
	CHECK(req.model.t == BJ_NONE && req.prompt.t == BJ_NONE);
	/* The overflow comes before the typed checks. */
	CHECK_STR(parse("{\"prompt\":5,\"n\":1e999}", COMPL),
		  "error unmarshaling request bodyMap: json: cannot unmarshal number 1e999 into Go "
		  "value of type float64");
	/* Nested objects' members are not top-level members. */
	CHECK_STR(parse("{\"x\":{\"prompt\":\"p\",\"model\":\"m\"}}", COMPL),
		  "invalid completions request: must have prompt field");
	CHECK(req.model.t == BJ_NONE);
	CHECK_STR(parse("{}", COMPL), "invalid completions request: must have prompt field");
}

int main(void)
{
	RUN(test_syntax_errors);
	RUN(test_valid_documents);
	RUN(test_nesting_limit);
	RUN(test_unquote);
	RUN(test_key_matching);
	RUN(test_numbers);
	RUN(test_quote);
	RUN(test_bodymap_errors);
	RUN(test_completions_validation);
	RUN(test_chat_validation);
	RUN(test_other_apis);
	RUN(test_model_and_stream);
	RUN(test_rewrite_model);
	RUN(test_usage_json);
	RUN(test_usage_sse);
	RUN(test_rewrite_back);
	RUN(test_string_runs);
	RUN(test_single_pass);
	return harness_done();
}
