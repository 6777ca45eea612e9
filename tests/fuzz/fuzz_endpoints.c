/* The --endpoints list (user/store/endpoints.c).
 *
 * Input: [pool selector][spec]. Bit 0..1 of the selector choose no pool, a
 * pool with one target port, one with three, or one with the most ports.
 * Accepted lists must hold canonical, distinct addresses with ranks that
 * index the pool's ports, and the list written back out must parse to the
 * same endpoints. */
#include <errno.h>

#include "fuzz.h"
#include "store/manifest.h"

static void check(const store_endpoint *eps, uint32_t n, const store_pool *pool)
{
	FUZZ_CHECK(n >= 1 && n <= STORE_ENDPOINTS_MAX);
	for (uint32_t i = 0; i < n; i++) {
		const store_endpoint *e = &eps[i];
		char addr[STORE_ADDR_MAX];
		FUZZ_CHECK(e->port >= 1);
		FUZZ_CHECK(e->index == i);
		FUZZ_CHECK(store_format_addr(addr, sizeof(addr), e->ip, e->port) > 0);
		FUZZ_CHECK(strcmp(addr, e->addr) == 0);
		FUZZ_CHECK(e->name == NULL && e->pod == NULL);
		if (pool && pool->n_target_ports)
			FUZZ_CHECK(e->rank < pool->n_target_ports);
		else
			FUZZ_CHECK(e->rank == 0);
		if (e->rank)
			FUZZ_CHECK(pool->target_ports[e->rank] == e->port);
		for (uint32_t j = 0; j < i; j++)
			FUZZ_CHECK(strcmp(eps[j].addr, e->addr) != 0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fin f = {data, size};
	uint8_t sel = fin_u8(&f);
	store_pool pools[4] = {{0}};
	pools[1].n_target_ports = 1;
	pools[1].target_ports[0] = 8000;
	pools[2].n_target_ports = 3;
	pools[2].target_ports[0] = 8000;
	pools[2].target_ports[1] = 8001;
	pools[2].target_ports[2] = 9;
	pools[3].n_target_ports = STORE_MAX_TARGET_PORTS;
	for (int i = 0; i < STORE_MAX_TARGET_PORTS; i++)
		pools[3].target_ports[i] = (uint16_t)(1 + i);
	const store_pool *pool = (sel & 3) ? &pools[sel & 3] : NULL;

	char *spec = fuzz_strdup(f.p, f.n);
	store_endpoint *eps = NULL;
	uint32_t n = 0;
	char err[256];
	err[0] = '\0';
	int r = store_endpoints_parse(spec, pool, &eps, &n, err, sizeof(err));
	if (r < 0) {
		FUZZ_CHECK(r == -EINVAL || r == -ENOMEM);
		FUZZ_CHECK(eps == NULL && n == 0 && err[0]);
		free(spec);
		return 0;
	}
	check(eps, n, pool);

	/* Written back as ip:port entries, the list parses to the same. */
	size_t cap = (size_t)n * (STORE_ADDR_MAX + 1) + 1, o = 0;
	char *again = malloc(cap);
	FUZZ_CHECK(again);
	for (uint32_t i = 0; i < n; i++)
		o += (size_t)snprintf(again + o, cap - o, "%s%s", i ? "," : "", eps[i].addr);
	store_endpoint *eps2 = NULL;
	uint32_t n2 = 0;
	FUZZ_CHECK(store_endpoints_parse(again, pool, &eps2, &n2, err, sizeof(err)) == 0);
	FUZZ_CHECK(n2 == n);
	for (uint32_t i = 0; i < n; i++) {
		FUZZ_CHECK(strcmp(eps[i].addr, eps2[i].addr) == 0);
		FUZZ_CHECK(strcmp(eps[i].ip, eps2[i].ip) == 0);
		FUZZ_CHECK(eps[i].port == eps2[i].port && eps[i].rank == eps2[i].rank);
	}
	free(eps2);
	free(again);
	free(eps);
	free(spec);
	return 0;
}
