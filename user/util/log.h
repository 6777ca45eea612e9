/* Structured logging: one JSON object per line on stderr,
 * {"level":..,"ts":..,"msg":..,<fields>}. Verbosity follows the reference
 * EPP's logr levels (--v): errors and warnings always, info at v>=LOG_DEFAULT
 * (2), verbose at 3, debug at 4, trace at 5. Thread-safe: each line is written
 * with one write(2). */
#ifndef KEPP_UTIL_LOG_H
#define KEPP_UTIL_LOG_H
#include <stdbool.h>

enum {
	LOG_ERROR = -2,
	LOG_WARN = -1,
	LOG_DEFAULT = 2,
	LOG_VERBOSE = 3,
	LOG_DEBUG = 4,
	LOG_TRACE = 5,
};

void log_set_verbosity(int v);
int log_verbosity(void);
static inline bool log_enabled(int v) { return v <= log_verbosity(); }

/* Logs |msg| with NULL-terminated key/value string pairs; values are escaped.
 * Example: ulog(LOG_ERROR, "cannot bind", "port", "9002", "error", strerror(e), NULL); */
void ulog(int v, const char *msg, ...) __attribute__((sentinel));

/* Like ulog, but |json_fields| is already-escaped JSON members ("\"k\":1,\"v\":\"x\"")
 * appended as is. For callers that build numeric fields. */
void ulog_raw(int v, const char *msg, const char *json_fields);

/* Appends |s| (|n| bytes) to |out| as JSON string content (no quotes), escaping
 * quotes, backslashes and control bytes. Returns bytes written; never writes more
 * than |cap|-1 and always NUL-terminates when |cap| > 0. */
unsigned long json_escape(char *out, unsigned long cap, const char *s, unsigned long n);
#endif
