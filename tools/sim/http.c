/* The simulator's HTTP surface: OpenAI completions and chat (JSON and SSE),
 * models, vLLM's LoRA load/unload, Prometheus /metrics in the engine's names,
 * and the fault control endpoint. Every answer carries x-sim-instance. */
#include "sim.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "util/log.h"
#include "util/rand.h"

static const char *const words[] = {
	" the", " model", " server", " is", " simulated", " and", " every", " token",
	" costs", " time", " in", " a", " batch", " of", " requests", ".",
};

static const char *word(const struct sim_req *r, int i)
{
	return words[((unsigned)i * 7u + (unsigned char)r->id[10]) % 16u];
}

static void json_header(struct evhttp_request *req)
{
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
			  "application/json");
}

/* Answers in OpenAI's error shape. */
static void send_error(struct evhttp_request *req, int code, const char *type, const char *fmt,
		       ...)
{
	struct evbuffer *b = evbuffer_new();
	char msg[1024], esc[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_escape(esc, sizeof(esc), msg, strlen(msg));
	json_header(req);
	if (b)
		evbuffer_add_printf(b, "{\"error\":{\"message\":\"%s\",\"type\":\"%s\","
				    "\"param\":null,\"code\":%d}}", esc, type, code);
	evhttp_send_reply(req, code, NULL, b);
	if (b)
		evbuffer_free(b);
}

static void send_text(struct evhttp_request *req, int code, const char *ctype, const char *s)
{
	struct evbuffer *b = evbuffer_new();

	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", ctype);
	if (b)
		evbuffer_add(b, s, strlen(s));
	evhttp_send_reply(req, code, NULL, b);
	if (b)
		evbuffer_free(b);
}

static void send_json(struct evhttp_request *req, cJSON *j)
{
	char *s = j ? cJSON_PrintUnformatted(j) : NULL;

	if (!s) {
		send_error(req, 500, "InternalServerError", "out of memory");
	} else {
		send_text(req, 200, "application/json", s);
		free(s);
	}
	cJSON_Delete(j);
}

/* The body as a NUL-terminated copy (evhttp already bounds its size). */
static char *body_of(struct evhttp_request *req, size_t *n)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	char *s;

	*n = evbuffer_get_length(in);
	s = malloc(*n + 1);
	if (!s)
		return NULL;
	evbuffer_copyout(in, s, *n);
	s[*n] = '\0';
	return s;
}

static cJSON *parse_body(struct evhttp_request *req)
{
	size_t n;
	char *s = body_of(req, &n);
	cJSON *j;

	if (!s) {
		send_error(req, 500, "InternalServerError", "out of memory");
		return NULL;
	}
	j = cJSON_ParseWithLength(s, n);
	free(s);
	if (!j || !cJSON_IsObject(j)) {
		cJSON_Delete(j);
		send_error(req, 400, "BadRequestError", "request body is not a JSON object");
		return NULL;
	}
	return j;
}

/* Closes the connection without an answer (the "drop" fault). evhttp then
 * fails the write and frees the request with its connection. */
static void drop(struct evhttp_request *req)
{
	struct evhttp_connection *c = evhttp_request_get_connection(req);
	struct bufferevent *bev = c ? evhttp_connection_get_bufferevent(c) : NULL;

	if (bev)
		shutdown(bufferevent_getfd(bev), SHUT_RDWR);
	evhttp_send_reply(req, 500, NULL, NULL);
}

void sim_req_free(struct sim_req *r)
{
	free(r->hashes);
	free(r->blocks);
	free(r->model_json);
	if (r->text)
		evbuffer_free(r->text);
	free(r);
}

/* ---- prompts ---- */

struct text {
	char *p;
	size_t n, cap;
};

static int text_add(struct text *t, const void *s, size_t n)
{
	if (t->n + n + 1 > t->cap) {
		size_t cap = t->cap ? t->cap : 256;
		char *p;

		while (cap < t->n + n + 1)
			cap *= 2;
		p = realloc(t->p, cap);
		if (!p)
			return -ENOMEM;
		t->p = p;
		t->cap = cap;
	}
	memcpy(t->p + t->n, s, n);
	t->n += n;
	t->p[t->n] = '\0';
	return 0;
}

static int text_str(struct text *t, const char *s)
{
	return text_add(t, s, strlen(s));
}

/* Token ids count as 4 bytes each, so tokens ~ bytes/4 holds for them too. */
static int prompt_tokens(struct text *t, const cJSON *arr)
{
	const cJSON *x;

	cJSON_ArrayForEach(x, arr) {
		int32_t id;

		if (!cJSON_IsNumber(x))
			return -EINVAL;
		id = (int32_t)x->valuedouble;
		if (text_add(t, &id, sizeof(id)))
			return -ENOMEM;
	}
	return 0;
}

static int completion_prompt(struct text *t, const cJSON *body)
{
	const cJSON *p = cJSON_GetObjectItemCaseSensitive(body, "prompt");

	if (cJSON_IsString(p))
		return text_str(t, p->valuestring);
	if (!cJSON_IsArray(p) || cJSON_GetArraySize(p) == 0)
		return -EINVAL;
	if (cJSON_IsNumber(p->child))
		return prompt_tokens(t, p);
	/* A batch of prompts is served as one sequence of their concatenation. */
	for (const cJSON *x = p->child; x; x = x->next) {
		int err = cJSON_IsString(x) ? text_str(t, x->valuestring) :
			  cJSON_IsArray(x) ? prompt_tokens(t, x) : -EINVAL;

		if (err)
			return err;
	}
	return 0;
}

static int chat_prompt(struct text *t, const cJSON *body)
{
	const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(body, "messages"), *m;

	if (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) == 0)
		return -EINVAL;
	cJSON_ArrayForEach(m, msgs) {
		const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
		const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content"), *part;

		if (!cJSON_IsString(role))
			return -EINVAL;
		if (text_str(t, "<|") || text_str(t, role->valuestring) || text_str(t, "|>\n"))
			return -ENOMEM;
		if (cJSON_IsString(content)) {
			if (text_str(t, content->valuestring))
				return -ENOMEM;
		} else if (cJSON_IsArray(content)) {
			cJSON_ArrayForEach(part, content) {
				const cJSON *tx = cJSON_GetObjectItemCaseSensitive(part, "text");

				if (cJSON_IsString(tx) && text_str(t, tx->valuestring))
					return -ENOMEM;
			}
		} else if (content && !cJSON_IsNull(content)) {
			return -EINVAL;
		}
		if (text_str(t, "\n"))
			return -ENOMEM;
	}
	return text_str(t, "<|assistant|>\n");
}

/* ---- completions ---- */

static void emit(struct evhttp_request *req, struct evbuffer *b)
{
	evhttp_send_reply_chunk(req, b);
}

static void usage_json(struct evbuffer *b, const struct sim_req *r)
{
	evbuffer_add_printf(b, "\"usage\":{\"prompt_tokens\":%d,\"total_tokens\":%d,"
			    "\"completion_tokens\":%d,\"prompt_tokens_details\":"
			    "{\"cached_tokens\":%d}}", r->prompt_tokens,
			    r->prompt_tokens + r->generated, r->generated, r->cached_tokens);
}

static const char *finish_reason(const struct sim_req *r)
{
	return r->explicit_max ? "\"length\"" : "\"stop\"";
}

void sim_http_token(struct sim_req *r, int i, bool last)
{
	struct evbuffer *b;

	if (!r->stream) {
		evbuffer_add_printf(r->text, "%s", word(r, i));
		return;
	}
	b = evbuffer_new();
	if (!b)
		return;
	if (r->chat && i == 0)
		evbuffer_add_printf(b, "data: {\"id\":\"%s\",\"object\":\"chat.completion.chunk\","
				    "\"created\":%ld,\"model\":\"%s\",\"choices\":[{\"index\":0,"
				    "\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
				    "\"logprobs\":null,\"finish_reason\":null}]}\n\n",
				    r->id, (long)r->created, r->model_json);
	if (r->chat)
		evbuffer_add_printf(b, "data: {\"id\":\"%s\",\"object\":\"chat.completion.chunk\","
				    "\"created\":%ld,\"model\":\"%s\",\"choices\":[{\"index\":0,"
				    "\"delta\":{\"content\":\"%s\"},\"logprobs\":null,"
				    "\"finish_reason\":%s}]}\n\n", r->id, (long)r->created,
				    r->model_json, word(r, i), last ? finish_reason(r) : "null");
	else
		evbuffer_add_printf(b, "data: {\"id\":\"%s\",\"object\":\"text_completion\","
				    "\"created\":%ld,\"model\":\"%s\",\"choices\":[{\"index\":0,"
				    "\"text\":\"%s\",\"logprobs\":null,\"finish_reason\":%s,"
				    "\"stop_reason\":null}]}\n\n", r->id, (long)r->created,
				    r->model_json, word(r, i), last ? finish_reason(r) : "null");
	emit(r->http, b);
	evbuffer_free(b);
}

void sim_http_finish(struct sim_req *r)
{
	struct evbuffer *b;
	bool done = r->generated >= r->max_tokens;

	if (!r->stream && !done) {
		send_error(r->http, 503, "ServiceUnavailableError", "server shutting down");
		return;
	}
	b = evbuffer_new();
	if (!b) {
		if (r->stream)
			evhttp_send_reply_end(r->http);
		else
			send_error(r->http, 500, "InternalServerError", "out of memory");
		return;
	}
	if (r->stream) {
		/* A stream cut by shutdown ends without [DONE], as a crashed server's would. */
		if (done && r->include_usage) {
			evbuffer_add_printf(b, "data: {\"id\":\"%s\",\"object\":\"%s\","
					    "\"created\":%ld,\"model\":\"%s\",\"choices\":[],",
					    r->id,
					    r->chat ? "chat.completion.chunk" : "text_completion",
					    (long)r->created, r->model_json);
			usage_json(b, r);
			evbuffer_add_printf(b, "}\n\n");
		}
		if (done)
			evbuffer_add_printf(b, "data: [DONE]\n\n");
		emit(r->http, b);
		evhttp_send_reply_end(r->http);
	} else {
		evbuffer_add_printf(b, "{\"id\":\"%s\",\"object\":\"%s\",\"created\":%ld,"
				    "\"model\":\"%s\",\"choices\":[{\"index\":0,", r->id,
				    r->chat ? "chat.completion" : "text_completion",
				    (long)r->created, r->model_json);
		if (r->chat)
			evbuffer_add_printf(b, "\"message\":{\"role\":\"assistant\","
					    "\"content\":\"");
		else
			evbuffer_add_printf(b, "\"text\":\"");
		evbuffer_add_buffer(b, r->text);
		evbuffer_add_printf(b, "\"%s,\"logprobs\":null,\"finish_reason\":%s}],",
				    r->chat ? "}" : "", finish_reason(r));
		usage_json(b, r);
		evbuffer_add_printf(b, "}");
		json_header(r->http);
		evhttp_send_reply(r->http, 200, "OK", b);
	}
	evbuffer_free(b);
}

static int int_field(const cJSON *body, const char *name, int *out)
{
	const cJSON *x = cJSON_GetObjectItemCaseSensitive(body, name);

	if (!x || cJSON_IsNull(x))
		return 0;
	if (!cJSON_IsNumber(x) || x->valuedouble < 1 || x->valuedouble > 1e9 ||
	    x->valuedouble != (double)(int)x->valuedouble)
		return -EINVAL;
	*out = (int)x->valuedouble;
	return 1;
}

static void inference(struct sim_inst *in, struct evhttp_request *req, bool chat)
{
	struct text t = { 0 };
	struct sim_req *r = NULL;
	const cJSON *model, *stream, *opts;
	const char *name;
	cJSON *body;
	char uuid[37];
	size_t elen;
	int err, got;

	if (in->faults.drop > 0 && rand_double() < in->faults.drop) {
		drop(req);
		return;
	}
	if (in->faults.http5xx > 0 && rand_double() < in->faults.http5xx) {
		send_error(req, 503, "ServiceUnavailableError", "simulated fault");
		return;
	}
	body = parse_body(req);
	if (!body)
		return;
	model = cJSON_GetObjectItemCaseSensitive(body, "model");
	if (model && !cJSON_IsString(model)) {
		send_error(req, 400, "BadRequestError", "model must be a string");
		goto out;
	}
	name = model ? model->valuestring : in->cfg->model;
	r = calloc(1, sizeof(*r));
	if (!r || !(r->text = evbuffer_new())) {
		send_error(req, 500, "InternalServerError", "out of memory");
		goto out;
	}
	r->inst = in;
	r->http = req;
	r->chat = chat;
	r->adapter = -1;
	if (strcmp(name, in->cfg->model)) {
		r->adapter = sim_adapter_find(in, name);
		if (r->adapter < 0) {
			send_error(req, 404, "NotFoundError", "The model `%s` does not exist.",
				   name);
			goto out;
		}
	}
	elen = strlen(name) * 6 + 1;
	r->model_json = malloc(elen);
	if (!r->model_json) {
		send_error(req, 500, "InternalServerError", "out of memory");
		goto out;
	}
	json_escape(r->model_json, elen, name, strlen(name));
	r->max_tokens = in->cfg->output_tokens;
	got = int_field(body, chat ? "max_completion_tokens" : "max_tokens", &r->max_tokens);
	if (got == 0 && chat)
		got = int_field(body, "max_tokens", &r->max_tokens);
	if (got < 0) {
		send_error(req, 400, "BadRequestError", "max_tokens must be a positive integer");
		goto out;
	}
	r->explicit_max = got > 0;
	stream = cJSON_GetObjectItemCaseSensitive(body, "stream");
	r->stream = cJSON_IsTrue(stream);
	opts = cJSON_GetObjectItemCaseSensitive(body, "stream_options");
	r->include_usage = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(opts, "include_usage"));
	err = chat ? chat_prompt(&t, body) : completion_prompt(&t, body);
	if (err) {
		if (err == -ENOMEM)
			send_error(req, 500, "InternalServerError", "out of memory");
		else
			send_error(req, 400, "BadRequestError", chat ?
				   "messages must be a non-empty list of {role, content}" :
				   "prompt must be a string, a list of strings or token ids");
		goto out;
	}
	rand_uuid4(uuid);
	snprintf(r->id, sizeof(r->id), "%s-%s", chat ? "chatcmpl" : "cmpl", uuid);
	r->created = time(NULL);
	err = sim_engine_submit(in, r, t.p ? t.p : "", t.n);
	if (err == -E2BIG) {
		send_error(req, 400, "BadRequestError", "This model's maximum context length is %d "
			   "tokens. However, you requested %d tokens (%d in the messages, %d in "
			   "the completion). Please reduce the length of the messages or "
			   "completion.", in->cfg->max_model_len, r->prompt_tokens + r->max_tokens,
			   r->prompt_tokens, r->max_tokens);
		goto out;
	} else if (err == -EAGAIN) {
		send_error(req, 503, "ServiceUnavailableError", "waiting queue is full");
		goto out;
	} else if (err) {
		send_error(req, 500, "InternalServerError", "out of memory");
		goto out;
	}
	if (r->stream) {
		struct evkeyvalq *h = evhttp_request_get_output_headers(req);

		evhttp_add_header(h, "Content-Type", "text/event-stream; charset=utf-8");
		evhttp_add_header(h, "Cache-Control", "no-cache");
		evhttp_send_reply_start(req, 200, "OK");
	}
	r = NULL;
out:
	if (r)
		sim_req_free(r);
	free(t.p);
	cJSON_Delete(body);
}

/* ---- models and LoRA ---- */

static void models(struct sim_inst *in, struct evhttp_request *req)
{
	cJSON *j = cJSON_CreateObject(), *data = cJSON_AddArrayToObject(j, "data"), *m;
	long now = (long)time(NULL);

	cJSON_AddStringToObject(j, "object", "list");
	for (int i = -1; i < SIM_MAX_ADAPTERS && data; i++) {
		const struct sim_adapter *a = i >= 0 ? &in->adapters[i] : NULL;

		if (a && !a->registered)
			continue;
		m = cJSON_CreateObject();
		if (!m || !cJSON_AddItemToArray(data, m))
			break;
		cJSON_AddStringToObject(m, "id", a ? a->name : in->cfg->model);
		cJSON_AddStringToObject(m, "object", "model");
		cJSON_AddNumberToObject(m, "created", (double)now);
		cJSON_AddStringToObject(m, "owned_by", "vllm");
		cJSON_AddStringToObject(m, "root", a ? a->path : in->cfg->model);
		if (a)
			cJSON_AddStringToObject(m, "parent", in->cfg->model);
		else
			cJSON_AddNullToObject(m, "parent");
		cJSON_AddNumberToObject(m, "max_model_len", in->cfg->max_model_len);
	}
	send_json(req, j);
}

static void lora(struct sim_inst *in, struct evhttp_request *req, bool load)
{
	cJSON *body = parse_body(req);
	const cJSON *name, *path;
	char msg[512];
	int err;

	if (!body)
		return;
	name = cJSON_GetObjectItemCaseSensitive(body, "lora_name");
	path = cJSON_GetObjectItemCaseSensitive(body, "lora_path");
	if (!cJSON_IsString(name) || (load && !cJSON_IsString(path))) {
		send_error(req, 400, "BadRequestError", load ?
			   "Both 'lora_name' and 'lora_path' must be provided." :
			   "'lora_name' needs to be provided to unload a LoRA adapter.");
		goto out;
	}
	err = load ? sim_adapter_add(in, name->valuestring, path->valuestring) :
		     sim_adapter_remove(in, name->valuestring);
	if (err == -EEXIST) {
		send_error(req, 400, "BadRequestError", "The lora adapter '%s' has already been "
			   "loaded.", name->valuestring);
	} else if (err == -ENOENT) {
		send_error(req, 404, "NotFoundError", "The lora adapter '%s' cannot be found.",
			   name->valuestring);
	} else if (err) {
		send_error(req, 400, "BadRequestError", "cannot load LoRA adapter '%s': %s",
			   name->valuestring, err == -ENOSPC ? "too many adapters" :
			   "invalid name or path");
	} else {
		snprintf(msg, sizeof(msg), "Success: LoRA adapter '%s' %s successfully.",
			 name->valuestring, load ? "added" : "removed");
		send_text(req, 200, "text/plain; charset=utf-8", msg);
	}
out:
	cJSON_Delete(body);
}

/* ---- metrics ---- */

/* Prometheus label value escaping: backslash, quote and newline. */
static void label_escape(struct evbuffer *b, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			evbuffer_add_printf(b, "\\%c", *s);
		else if (*s == '\n')
			evbuffer_add(b, "\\n", 2);
		else
			evbuffer_add(b, s, 1);
	}
}

static void gauge(struct evbuffer *b, const char *name, const char *help, const char *type,
		  const char *labels, double v)
{
	evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s%s %.12g\n", name, help, name, type,
			    name, labels, v);
}

static void metrics_text(struct sim_inst *in, struct evbuffer *b)
{
	const struct sim_config *c = in->cfg;
	const struct sim_engine *e = &in->eng;
	struct evbuffer *lb = evbuffer_new();
	double kv = sim_engine_kv_usage(in);
	char labels[600], list[SIM_MAX_ADAPTERS * (SIM_MAX_NAME + 1)];
	struct timespec ts;
	size_t n;

	if (!lb)
		return;
	evbuffer_add(lb, "{model_name=\"", 13);
	label_escape(lb, c->model);
	evbuffer_add(lb, "\"}", 2);
	n = evbuffer_get_length(lb);
	if (n >= sizeof(labels))
		n = sizeof(labels) - 1;
	evbuffer_remove(lb, labels, n);
	labels[n] = '\0';
	switch (c->engine) {
	case SIM_VLLM:
		gauge(b, "vllm:num_requests_running", "Number of requests in model execution "
		      "batches.", "gauge", labels, e->nrunning);
		gauge(b, "vllm:num_requests_waiting", "Number of requests waiting to be "
		      "processed.", "gauge", labels, e->nwaiting);
		gauge(b, "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.",
		      "gauge", labels, kv);
		gauge(b, "vllm:gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent "
		      "usage.", "gauge", labels, kv);
		clock_gettime(CLOCK_REALTIME, &ts);
		evbuffer_add_printf(b, "# HELP vllm:lora_requests_info Running stats on lora "
				    "requests.\n# TYPE vllm:lora_requests_info gauge\n"
				    "vllm:lora_requests_info{max_lora=\"%d\",running_lora_adapters=\"",
				    c->max_loras);
		sim_adapters_list(in, true, list, sizeof(list));
		label_escape(b, list);
		evbuffer_add_printf(b, "\",waiting_lora_adapters=\"");
		sim_adapters_list(in, false, list, sizeof(list));
		label_escape(b, list);
		evbuffer_add_printf(b, "\"} %.6f\n", ts.tv_sec + ts.tv_nsec / 1e9);
		evbuffer_add_printf(b, "# HELP vllm:cache_config_info Information of the "
				    "LLMEngine CacheConfig\n# TYPE vllm:cache_config_info gauge\n"
				    "vllm:cache_config_info{block_size=\"%d\",enable_prefix_caching="
				    "\"True\",num_gpu_blocks=\"%d\"} 1.0\n", c->block_size,
				    c->num_gpu_blocks);
		gauge(b, "vllm:prefix_cache_queries_total", "Prefix cache queries, in terms of "
		      "number of queried tokens.", "counter", labels, (double)e->prefix_queries);
		gauge(b, "vllm:prefix_cache_hits_total", "Prefix cache hits, in terms of number "
		      "of cached tokens.", "counter", labels, (double)e->prefix_hits);
		gauge(b, "vllm:prompt_tokens_total", "Number of prefill tokens processed.",
		      "counter", labels, (double)e->prompt_tokens_total);
		gauge(b, "vllm:generation_tokens_total", "Number of generation tokens processed.",
		      "counter", labels, (double)e->generation_tokens_total);
		break;
	case SIM_SGLANG:
		gauge(b, "sglang:num_running_reqs", "The number of running requests.", "gauge",
		      labels, e->nrunning);
		gauge(b, "sglang:num_queue_reqs", "The number of requests in the waiting queue.",
		      "gauge", labels, e->nwaiting);
		gauge(b, "sglang:token_usage", "The token usage.", "gauge", labels, kv);
		gauge(b, "sglang:cache_hit_rate", "The prefix cache hit rate.", "gauge", labels,
		      e->prefix_queries ? (double)e->prefix_hits / e->prefix_queries : 0);
		evbuffer_add_printf(b, "# HELP sglang:cache_config_info Information of the cache "
				    "config.\n# TYPE sglang:cache_config_info gauge\n"
				    "sglang:cache_config_info{num_pages=\"%d\",page_size=\"%d\"} 1.0\n",
				    c->num_gpu_blocks, c->block_size);
		break;
	case SIM_TRTLLM:
		gauge(b, "trtllm_num_requests_running", "Number of running requests.", "gauge",
		      labels, e->nrunning);
		gauge(b, "trtllm_num_requests_waiting", "Number of waiting requests.", "gauge",
		      labels, e->nwaiting);
		gauge(b, "trtllm_kv_cache_utilization", "KV cache utilization.", "gauge", labels,
		      kv);
		gauge(b, "trtllm_kv_cache_tokens_per_block", "Tokens per KV cache block.",
		      "gauge", labels, c->block_size);
		gauge(b, "trtllm_kv_cache_max_blocks", "Number of KV cache blocks.", "gauge",
		      labels, c->num_gpu_blocks);
		break;
	}
	/* Whatever the engine: what the routing benchmark reads. */
	gauge(b, "sim:prefix_cache_queries_total", "Prompt tokens looked up in the prefix cache.",
	      "counter", "", (double)e->prefix_queries);
	gauge(b, "sim:prefix_cache_hits_total", "Prompt tokens found in the prefix cache.",
	      "counter", "", (double)e->prefix_hits);
	gauge(b, "sim:lora_loads_total", "LoRA adapters loaded into a GPU slot.", "counter", "",
	      (double)e->lora_loads);
	gauge(b, "sim:requests_total", "Requests finished.", "counter", "",
	      (double)e->requests_total);
	evbuffer_free(lb);
}

static void metrics_answer(struct sim_inst *in, struct evhttp_request *req)
{
	struct evbuffer *b = evbuffer_new();

	if (!b) {
		send_error(req, 500, "InternalServerError", "out of memory");
		return;
	}
	if (in->faults.metrics == SIM_MX_FAIL) {
		evbuffer_add_printf(b, "simulated metrics failure\n");
		evhttp_send_reply(req, 500, NULL, b);
		evbuffer_free(b);
		return;
	}
	if (in->faults.metrics == SIM_MX_GARBAGE) {
		static const char junk[] = "{}\"\\ #=,\n\t\x01\xff\xfe";

		evbuffer_add_printf(b, "vllm:num_requests_waiting{model_name=\"unterminated 1\n");
		for (int i = 0; i < 256; i++)
			evbuffer_add(b, &junk[rand_below(sizeof(junk) - 1)], 1);
	} else {
		metrics_text(in, b);
	}
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
			  "text/plain; version=0.0.4; charset=utf-8");
	evhttp_send_reply(req, 200, "OK", b);
	evbuffer_free(b);
}

struct sim_slow {
	TAILQ_ENTRY(sim_slow) link;
	struct sim_inst *in;
	struct evhttp_request *req;
	struct event *ev;
};

static void slow_done(struct sim_slow *s)
{
	TAILQ_REMOVE(&s->in->slow, s, link);
	event_free(s->ev);
	metrics_answer(s->in, s->req);
	free(s);
}

static void slow_metrics_cb(evutil_socket_t fd, short what, void *arg)
{
	slow_done(arg);
}

static void metrics(struct sim_inst *in, struct evhttp_request *req)
{
	struct sim_slow *s;
	struct timeval tv;

	if (in->faults.metrics != SIM_MX_SLOW) {
		metrics_answer(in, req);
		return;
	}
	/* The request stays ours until answered, even if the client hangs up. */
	s = calloc(1, sizeof(*s));
	if (s)
		s->ev = evtimer_new(in->base, slow_metrics_cb, s);
	if (!s || !s->ev) {
		free(s);
		send_error(req, 500, "InternalServerError", "out of memory");
		return;
	}
	s->in = in;
	s->req = req;
	TAILQ_INSERT_TAIL(&in->slow, s, link);
	tv.tv_sec = in->faults.metrics_delay_ms / 1000;
	tv.tv_usec = (in->faults.metrics_delay_ms % 1000) * 1000;
	evtimer_add(s->ev, &tv);
}

/* ---- faults ---- */

static const char *const mx_names[] = { "ok", "slow", "fail", "garbage" };

int sim_metrics_fault_parse(const char *s)
{
	for (int i = 0; i < 4; i++)
		if (!strcmp(s, mx_names[i]))
			return i;
	return -EINVAL;
}

static int prob_field(const cJSON *body, const char *name, double *out)
{
	const cJSON *x = cJSON_GetObjectItemCaseSensitive(body, name);

	if (!x)
		return 0;
	if (!cJSON_IsNumber(x) || !(x->valuedouble >= 0 && x->valuedouble <= 1))
		return -EINVAL;
	*out = x->valuedouble;
	return 0;
}

static void fault(struct sim_inst *in, struct evhttp_request *req)
{
	struct sim_faults f = in->faults;
	cJSON *j;

	if (evhttp_request_get_command(req) == EVHTTP_REQ_POST) {
		cJSON *body = parse_body(req);
		const cJSON *mx, *delay;

		if (!body)
			return;
		mx = cJSON_GetObjectItemCaseSensitive(body, "metrics");
		delay = cJSON_GetObjectItemCaseSensitive(body, "metrics_delay_ms");
		if ((mx && (!cJSON_IsString(mx) || sim_metrics_fault_parse(mx->valuestring) < 0)) ||
		    (delay && (!cJSON_IsNumber(delay) || delay->valuedouble < 0 ||
			       delay->valuedouble > 600000)) ||
		    prob_field(body, "http5xx", &f.http5xx) || prob_field(body, "drop", &f.drop)) {
			cJSON_Delete(body);
			send_error(req, 400, "BadRequestError", "expected {\"metrics\": \"ok|slow|"
				   "fail|garbage\", \"metrics_delay_ms\": 0..600000, \"http5xx\": "
				   "0..1, \"drop\": 0..1}");
			return;
		}
		if (mx)
			f.metrics = sim_metrics_fault_parse(mx->valuestring);
		if (delay)
			f.metrics_delay_ms = (int)delay->valuedouble;
		cJSON_Delete(body);
		in->faults = f;
	}
	j = cJSON_CreateObject();
	cJSON_AddStringToObject(j, "instance", in->hostport);
	cJSON_AddStringToObject(j, "metrics", mx_names[f.metrics]);
	cJSON_AddNumberToObject(j, "metrics_delay_ms", f.metrics_delay_ms);
	cJSON_AddNumberToObject(j, "http5xx", f.http5xx);
	cJSON_AddNumberToObject(j, "drop", f.drop);
	send_json(req, j);
}

/* ---- dispatch ---- */

static void handle(struct evhttp_request *req, void *arg)
{
	struct sim_inst *in = arg;
	const char *uri = evhttp_request_get_uri(req);
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	bool get = cmd == EVHTTP_REQ_GET, post = cmd == EVHTTP_REQ_POST;
	size_t n = strcspn(uri, "?");
	char path[64];

	evhttp_add_header(evhttp_request_get_output_headers(req), "x-sim-instance", in->hostport);
	if (n >= sizeof(path))
		n = sizeof(path) - 1;
	memcpy(path, uri, n);
	path[n] = '\0';
	if (post && !strcmp(path, "/v1/completions"))
		inference(in, req, false);
	else if (post && !strcmp(path, "/v1/chat/completions"))
		inference(in, req, true);
	else if (get && !strcmp(path, "/v1/models"))
		models(in, req);
	else if (post && !strcmp(path, "/v1/load_lora_adapter"))
		lora(in, req, true);
	else if (post && !strcmp(path, "/v1/unload_lora_adapter"))
		lora(in, req, false);
	else if (get && (!strcmp(path, "/metrics") || !strcmp(path, "/prometheus/metrics")))
		metrics(in, req);
	else if ((get || post) && !strcmp(path, "/sim/fault"))
		fault(in, req);
	else if (post && !strcmp(path, "/reset_prefix_cache")) {
		sim_engine_reset_prefix_cache(in);
		send_text(req, 200, "text/plain", "");
	} else if (get && !strcmp(path, "/health"))
		send_text(req, 200, "text/plain", "");
	else
		send_error(req, 404, "NotFoundError", "no route for %s %s", get ? "GET" : "POST",
			   path);
}

void sim_http_free(struct sim_inst *in)
{
	while (!TAILQ_EMPTY(&in->slow))
		slow_done(TAILQ_FIRST(&in->slow));
	if (in->http)
		evhttp_free(in->http);
	in->http = NULL;
}

int sim_http_init(struct sim_inst *in)
{
	TAILQ_INIT(&in->slow);
	in->http = evhttp_new(in->base);
	if (!in->http)
		return -ENOMEM;
	evhttp_set_max_body_size(in->http, in->cfg->max_body_bytes);
	evhttp_set_max_headers_size(in->http, 64 << 10);
	evhttp_set_allowed_methods(in->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST);
	evhttp_set_gencb(in->http, handle, in);
	if (!evhttp_bind_socket_with_handle(in->http, in->addr, (uint16_t)in->cfg->port)) {
		int e = errno;

		return e ? -e : -EADDRINUSE;
	}
	return 0;
}
