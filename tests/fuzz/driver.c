/* Replays fuzz inputs through a target without libFuzzer, so the corpora run
 * as regression tests in `make test` (and under ASan + UBSan in `make asan`)
 * with the project's own compiler.
 *
 *   test_fuzz_<name>              every file of tests/fuzz/corpus/<name> and
 *                                 tests/fuzz/regress/<name> (run from the repo root)
 *   test_fuzz_<name> DIR|FILE...  those instead; a single FILE runs in-process
 *                                 (for a debugger), everything else one child
 *                                 per input so a crash names its input.
 *
 * Ends with the "N passed, N failed" line tests/run.sh sums. */
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fuzz.h"

#ifndef FUZZ_NAME
#error "build with -DFUZZ_NAME=\"<target>\""
#endif

static int passed, failed;

static int read_file(const char *path, uint8_t **out, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return -errno;
	size_t cap = 4096, n = 0;
	uint8_t *b = malloc(cap);
	for (;;) {
		if (!b) {
			fclose(f);
			return -ENOMEM;
		}
		n += fread(b + n, 1, cap - n, f);
		if (n < cap)
			break;
		cap *= 2;
		uint8_t *nb = realloc(b, cap);
		if (!nb)
			free(b);
		b = nb;
	}
	int bad = ferror(f);
	fclose(f);
	if (bad) {
		free(b);
		return -EIO;
	}
	*out = b;
	*len = n;
	return 0;
}

/* Runs one input in a child; true when it returned normally. */
static bool run_child(const char *path)
{
	uint8_t *data;
	size_t len;
	if (read_file(path, &data, &len) < 0) {
		fprintf(stderr, "%s: cannot read\n", path);
		return false;
	}
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) {
		LLVMFuzzerTestOneInput(data, len);
		_exit(0);
	}
	free(data);
	int st;
	if (pid < 0 || waitpid(pid, &st, 0) != pid)
		return false;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

static int not_dot(const struct dirent *e)
{
	return e->d_name[0] != '.';
}

/* Every file of |dir|; a missing directory counts as a failure when |must|. */
static void run_dir(const char *dir, bool must)
{
	struct dirent **list;
	int n = scandir(dir, &list, not_dot, by_name);
	if (n < 0) {
		if (must || errno != ENOENT) {
			printf("not ok - %s: %s\n", dir, strerror(errno));
			failed++;
		}
		return;
	}
	int ok = 0, bad = 0;
	for (int i = 0; i < n; i++) {
		char path[4096];
		snprintf(path, sizeof(path), "%s/%s", dir, list[i]->d_name);
		free(list[i]);
		if (run_child(path)) {
			ok++;
		} else {
			printf("not ok - %s\n", path);
			bad++;
		}
	}
	free(list);
	printf("%s - %s: %d inputs\n", bad ? "not ok" : "ok", dir, ok + bad);
	passed += ok;
	failed += bad;
}

int main(int argc, char **argv)
{
	if (argc == 2) {
		struct stat st;
		if (stat(argv[1], &st) == 0 && S_ISREG(st.st_mode)) {
			uint8_t *data;
			size_t len;
			if (read_file(argv[1], &data, &len) < 0) {
				fprintf(stderr, "%s: cannot read\n", argv[1]);
				return 1;
			}
			LLVMFuzzerTestOneInput(data, len);
			free(data);
			printf("1 passed, 0 failed\n");
			return 0;
		}
	}
	if (argc > 1) {
		for (int i = 1; i < argc; i++) {
			struct stat st;
			if (stat(argv[i], &st) == 0 && S_ISREG(st.st_mode)) {
				if (run_child(argv[i])) {
					passed++;
				} else {
					printf("not ok - %s\n", argv[i]);
					failed++;
				}
			} else {
				run_dir(argv[i], true);
			}
		}
	} else {
		run_dir("tests/fuzz/corpus/" FUZZ_NAME, true);
		run_dir("tests/fuzz/regress/" FUZZ_NAME, false);
	}
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
