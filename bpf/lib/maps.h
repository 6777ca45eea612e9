/* maps: every map kepp's BPF programs share, pinned by name under
 * <bpffs>/kepp/ (the loader sets pin_root_path), so each object reuses the
 * same maps and a restarted daemon adopts them. Keys and values are declared
 * with __type so `bpftool map dump pinned` prints field names. */
#ifndef KEPP_LIB_MAPS_H
#define KEPP_LIB_MAPS_H

#include "kepp_abi.h"

/* Fast-path services: VIP:port -> the weighted backend table. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KEPP_MAX_SERVICES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct kepp_svc_key);
	__type(value, struct kepp_svc);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kepp_svc_v1 SEC(".maps");

/* Fast-path services: VIP:port -> model and pool (userspace only; bpftool
 * prints the names). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KEPP_MAX_SERVICES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct kepp_svc_key);
	__type(value, struct kepp_svc_meta);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kepp_model_v1 SEC(".maps");

/* Backend address -> live in-flight count and RTT (sockops writes). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KEPP_MAX_ENDPOINTS);
	__type(key, struct kepp_addr);
	__type(value, struct kepp_be_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kepp_be_v1 SEC(".maps");

/* Socket -> its VIP and backend (getpeername, sockops). */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct kepp_sk_state);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kepp_sk_v1 SEC(".maps");

/* Client (cgroup) and service -> the pod it was sent to last. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct kepp_aff_key);
	__type(value, struct kepp_aff_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kepp_aff_v1 SEC(".maps");

/* kepp's userspace fallback listeners, by KEPP_FB_* slot (sk_lookup assigns
 * to them). One per family: a socket bound to ::1 is IPv6-only. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, KEPP_FB_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kepp_fb_v1 SEC(".maps");

/* XDP packet and byte counters per VIP:port. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, KEPP_MAX_SERVICES);
	__type(key, struct kepp_svc_key);
	__type(value, struct kepp_vip_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kepp_vip_v1 SEC(".maps");

/* Backends that left the pool: their steered connections are closed by
 * kepp_drain (iter/tcp). Empty except while userspace runs the iterator. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KEPP_MAX_ENDPOINTS);
	__type(key, struct kepp_addr);
	__type(value, struct kepp_drain);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kepp_drain_v1 SEC(".maps");

/* connect decisions by enum kepp_verdict. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KEPP_VERDICTS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kepp_verdict_v1 SEC(".maps");
#endif
