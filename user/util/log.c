#include "util/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int verbosity = LOG_DEFAULT;

void log_set_verbosity(int v) { atomic_store(&verbosity, v); }
int log_verbosity(void) { return atomic_load_explicit(&verbosity, memory_order_relaxed); }

unsigned long json_escape(char *out, unsigned long cap, const char *s, unsigned long n)
{
	unsigned long o = 0;
	if (cap == 0)
		return 0;
	for (unsigned long i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[8];
		int el = 0;
		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			el = 2;
		} else if (c == '\n') {
			memcpy(esc, "\\n", 2);
			el = 2;
		} else if (c == '\t') {
			memcpy(esc, "\\t", 2);
			el = 2;
		} else if (c == '\r') {
			memcpy(esc, "\\r", 2);
			el = 2;
		} else if (c < 0x20 || c == 0x7f) {
			el = snprintf(esc, sizeof(esc), "\\u%04x", c);
		} else {
			esc[0] = (char)c;
			el = 1;
		}
		if (o + (unsigned long)el >= cap)
			break;
		memcpy(out + o, esc, (size_t)el);
		o += (unsigned long)el;
	}
	out[o] = '\0';
	return o;
}

static const char *level_name(int v)
{
	if (v == LOG_ERROR)
		return "error";
	if (v == LOG_WARN)
		return "warn";
	if (v <= LOG_DEFAULT)
		return "info";
	return "debug";
}

static void emit(int v, const char *msg, const char *fields)
{
	char line[8192];
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	int n = snprintf(line, sizeof(line),
			 "{\"level\":\"%s\",\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"msg\":\"",
			 level_name(v), tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
			 tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
	n += (int)json_escape(line + n, sizeof(line) - (unsigned long)n - 4, msg, strlen(msg));
	line[n++] = '"';
	if (fields && *fields) {
		size_t fl = strlen(fields);
		if ((size_t)n + fl + 3 < sizeof(line)) {
			line[n++] = ',';
			memcpy(line + n, fields, fl);
			n += (int)fl;
		}
	}
	line[n++] = '}';
	line[n++] = '\n';
	ssize_t w = write(STDERR_FILENO, line, (size_t)n);
	(void)w;
}

void ulog_raw(int v, const char *msg, const char *json_fields)
{
	if (!log_enabled(v))
		return;
	emit(v, msg, json_fields);
}

void ulog(int v, const char *msg, ...)
{
	if (!log_enabled(v))
		return;
	char fields[6144];
	size_t n = 0;
	va_list ap;
	va_start(ap, msg);
	for (;;) {
		const char *k = va_arg(ap, const char *);
		if (!k)
			break;
		const char *val = va_arg(ap, const char *);
		if (!val)
			val = "";
		if (n + 8 >= sizeof(fields))
			break;
		if (n)
			fields[n++] = ',';
		fields[n++] = '"';
		n += json_escape(fields + n, sizeof(fields) - n - 4, k, strlen(k));
		fields[n++] = '"';
		fields[n++] = ':';
		fields[n++] = '"';
		n += json_escape(fields + n, sizeof(fields) - n - 2, val, strlen(val));
		fields[n++] = '"';
	}
	va_end(ap);
	fields[n] = '\0';
	emit(v, msg, fields);
}
