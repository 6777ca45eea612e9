/* kepp-sim: a simulated OpenAI-compatible model server. One process runs many
 * instances on one libevent loop; each instance has its own engine (waiting
 * queue, continuous batch, paged KV cache with prefix caching, LoRA slots)
 * driven by a step timer, and its own HTTP server. */
#ifndef KEPP_SIM_H
#define KEPP_SIM_H
#include <stdbool.h>
#include <stdint.h>
#include <netinet/in.h>
#include <stddef.h>
#include <sys/queue.h>
#include <time.h>

struct event;
struct event_base;
struct evhttp;
struct evhttp_request;
struct evbuffer;

enum sim_engine_kind { SIM_VLLM, SIM_SGLANG, SIM_TRTLLM };
enum sim_metrics_fault { SIM_MX_OK, SIM_MX_SLOW, SIM_MX_FAIL, SIM_MX_GARBAGE };

#define SIM_MAX_ADAPTERS 256
#define SIM_MAX_NAME 128

struct sim_config {
	int instances;
	uint32_t base_addr; /* host order */
	int port;
	enum sim_engine_kind engine;
	const char *model;
	const char *loras; /* comma list registered at start */
	int max_num_seqs;
	int max_num_batched_tokens;
	int num_gpu_blocks;
	int block_size;
	int max_model_len;
	int max_loras;
	int max_waiting;
	int output_tokens; /* when a request names no max_tokens */
	double time_scale;
	double decode_ms;
	double decode_ms_per_seq;
	double prefill_ms_per_token;
	double lora_load_ms;
	long max_body_bytes;
	uint64_t seed;
	/* faults applied to every instance at start */
	enum sim_metrics_fault metrics_fault;
	int metrics_delay_ms;
	double http5xx;
	double drop;
};

struct sim_faults {
	enum sim_metrics_fault metrics;
	int metrics_delay_ms;
	double http5xx;
	double drop;
};

struct kv_block {
	uint64_t hash;
	int32_t ref;
	int32_t hnext; /* hash bucket chain, -1 ends */
	int32_t prev, next; /* free or LRU list */
	bool hashed;
};

struct sim_adapter {
	char name[SIM_MAX_NAME];
	char path[256];
	uint64_t seed; /* block hash chain seed: cache entries are per adapter */
	bool registered;
	int running, waiting; /* requests using it */
	int slot; /* GPU slot, -1 when not loaded */
};

struct sim_inst;

enum sim_req_state { RQ_WAITING, RQ_RUNNING };

struct sim_req {
	TAILQ_ENTRY(sim_req) link;
	struct sim_inst *inst;
	struct evhttp_request *http;
	enum sim_req_state state;
	bool chat, stream, include_usage, explicit_max;
	int adapter; /* -1: base model */
	int prompt_tokens, max_tokens, generated, cached_tokens;
	int nhash; /* full prompt blocks */
	uint64_t *hashes;
	int nblocks;
	int32_t *blocks;
	char id[48];
	time_t created;
	char *model_json; /* model name, JSON-escaped */
	struct evbuffer *text; /* generated text for non-streaming answers */
};

TAILQ_HEAD(sim_req_list, sim_req);

struct sim_engine {
	struct kv_block *blocks; /* num_gpu_blocks + 2 list heads */
	int32_t *buckets;
	uint32_t nbuckets;
	int32_t free_head, lru_head; /* sentinel indices */
	int nfree, nlru;
	struct sim_req_list waiting, running;
	int nwaiting, nrunning;
	int slots[64]; /* adapter index per LoRA slot, -1 empty */
	uint64_t slot_used[64];
	uint64_t tick;
	struct event *step_ev;
	bool stepping;
	/* counters */
	uint64_t prefix_queries, prefix_hits; /* tokens */
	uint64_t prompt_tokens_total, generation_tokens_total;
	uint64_t requests_total, lora_loads;
};

struct sim_slow;
TAILQ_HEAD(sim_slow_list, sim_slow);

struct sim_inst {
	int idx;
	char addr[INET_ADDRSTRLEN];
	char hostport[40];
	struct sim_config *cfg;
	struct event_base *base;
	struct evhttp *http;
	struct sim_engine eng;
	struct sim_faults faults;
	struct sim_adapter *adapters; /* SIM_MAX_ADAPTERS */
	struct sim_slow_list slow; /* /metrics answers held back by the slow fault */
};

/* engine.c */
int sim_engine_init(struct sim_inst *in);
void sim_engine_free(struct sim_inst *in);
/* Queues a request whose prompt is |text| (|n| bytes; ~4 bytes a token).
 * Sets r->prompt_tokens. Returns 0, -E2BIG when prompt plus max_tokens can
 * never fit (max-model-len or the whole KV cache), -EAGAIN when the waiting
 * queue is full, -ENOMEM. */
int sim_engine_submit(struct sim_inst *in, struct sim_req *r, const char *text, size_t n);
/* Answers every request in flight (shutdown) and frees them. */
void sim_engine_abort_all(struct sim_inst *in);
/* Drops every cached block no request holds (vLLM's /reset_prefix_cache). */
void sim_engine_reset_prefix_cache(struct sim_inst *in);
double sim_engine_kv_usage(const struct sim_inst *in);
int sim_adapter_find(const struct sim_inst *in, const char *name);
int sim_adapter_add(struct sim_inst *in, const char *name, const char *path);
int sim_adapter_remove(struct sim_inst *in, const char *name);
/* Comma list of adapters with running (or waiting) requests into |out|. */
void sim_adapters_list(const struct sim_inst *in, bool running, char *out, size_t cap);

/* http.c: called by the engine as tokens come out. */
int sim_http_init(struct sim_inst *in);
/* Answers held-back requests and closes the listener and connections. */
void sim_http_free(struct sim_inst *in);
/* "ok", "slow", "fail", "garbage" to enum sim_metrics_fault, or -EINVAL. */
int sim_metrics_fault_parse(const char *s);
void sim_http_token(struct sim_req *r, int index, bool last);
void sim_http_finish(struct sim_req *r);
void sim_req_free(struct sim_req *r);
#endif
