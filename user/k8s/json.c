/* Small helpers over cJSON and URLs used across the module. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "k8s/k8s.h"

static const cJSON *vget(const cJSON *obj, va_list ap)
{
	const char *key;
	while (obj && (key = va_arg(ap, const char *)))
		obj = cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
	return obj;
}

const cJSON *k8s_json_get(const cJSON *obj, ...)
{
	va_list ap;
	va_start(ap, obj);
	const cJSON *r = vget(obj, ap);
	va_end(ap);
	return r;
}

const char *k8s_json_str(const cJSON *obj, ...)
{
	va_list ap;
	va_start(ap, obj);
	const cJSON *r = vget(obj, ap);
	va_end(ap);
	return cJSON_IsString(r) ? r->valuestring : NULL;
}

char *k8s_url_escape(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(s);
	char *out = malloc(3 * n + 1), *o = out;
	if (!out)
		return NULL;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.' || *p == '~') {
			*o++ = (char)*p;
		} else {
			*o++ = '%';
			*o++ = hex[*p >> 4];
			*o++ = hex[*p & 15];
		}
	}
	*o = '\0';
	return out;
}

void k8s_format_microtime(char *out, size_t cap, int64_t unix_us)
{
	time_t t = (time_t)(unix_us / 1000000);
	struct tm tm;
	char base[32];
	gmtime_r(&t, &tm);
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, cap, "%s.%06dZ", base, (int)(unix_us % 1000000));
}
