# Fuzz targets: tests/fuzz/fuzz_<name>.c, each one LLVMFuzzerTestOneInput.
#
#   make fuzz [FUZZ_SECONDS=10]  builds every target with clang, libFuzzer, ASan and
#                                UBSan into $(FUZZ_BUILD) and runs each in turn for
#                                FUZZ_SECONDS; new inputs go to $(FUZZ_BUILD)/corpus/<name>,
#                                crashes to $(FUZZ_BUILD)/crashes/, logs to $(FUZZ_BUILD)/logs/
#   make fuzz FUZZ_TARGETS="body prom"   only those
#   make fuzz-regress            the libFuzzer binaries over the committed inputs (-runs=0)
#
# The same sources are also linked with tests/fuzz/driver.c by the project's
# compiler as $(BUILD)/tests/test_fuzz_<name>, which `make test` runs over
# tests/fuzz/corpus/<name> and tests/fuzz/regress/<name> like any unit test.

FUZZ_CC      ?= clang
FUZZ_BUILD   ?= $(BUILD)-fuzz
FUZZ_SECONDS ?= 10
FUZZ_FLAGS   ?=
FUZZ_ALL     := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_TARGETS ?= $(FUZZ_ALL)
FUZZ_BINS    := $(addprefix $(FUZZ_BUILD)/fuzz_,$(FUZZ_TARGETS))
FUZZ_TESTS   := $(addprefix $(BUILD)/tests/test_fuzz_,$(FUZZ_ALL))

FUZZ_SAN    := -fsanitize=address,undefined -fno-sanitize-recover=undefined \
               -fno-omit-frame-pointer
FUZZ_CFLAGS  = -O1 -g -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter -D_GNU_SOURCE \
               -pthread -Iuser -I$(GEN) -Ibpf -Itests/fuzz $(PKG_CFLAGS) $(FUZZ_SAN)
# Everything but the BPF loader (user/kernel/), which needs generated skeletons
# and no target reaches.
FUZZ_OBJS   := $(patsubst %.c,$(FUZZ_BUILD)/obj/%.o,$(filter-out user/kernel/%,$(USER_SRCS))) \
               $(patsubst $(GEN)/%.c,$(FUZZ_BUILD)/obj/gen/%.o,$(PROTO_C))

.PHONY: fuzz fuzz-build fuzz-regress

$(FUZZ_BUILD)/obj/gen/%.o: $(GEN)/%.c $(BUILD)/.protos
	$(Q)mkdir -p $(dir $@)
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -Wno-error -c $< -o $@

$(FUZZ_BUILD)/obj/%.o: %.c $(BUILD)/.protos
	$(Q)mkdir -p $(dir $@)
	@echo "  CC [fuzz] $<"
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

$(FUZZ_BUILD)/libkepp.a: $(FUZZ_OBJS)
	$(Q)rm -f $@
	$(Q)ar rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/obj/tests/fuzz/fuzz_%.o $(FUZZ_BUILD)/libkepp.a
	@echo "  LD $@"
	$(Q)$(FUZZ_CC) -fsanitize=fuzzer $(FUZZ_SAN) -pthread $^ -o $@ $(LDLIBS)

fuzz-build: deps $(FUZZ_BINS)

# One target at a time (the machines are small); every target runs even after
# a crash, and the exit status says whether any crashed.
fuzz: fuzz-build
	$(Q)fail=0; \
	for t in $(FUZZ_TARGETS); do \
		mkdir -p $(FUZZ_BUILD)/corpus/$$t $(FUZZ_BUILD)/crashes $(FUZZ_BUILD)/logs; \
		dirs="$(FUZZ_BUILD)/corpus/$$t tests/fuzz/corpus/$$t"; \
		[ -d tests/fuzz/regress/$$t ] && dirs="$$dirs tests/fuzz/regress/$$t"; \
		dict=; [ -f tests/fuzz/$$t.dict ] && dict=-dict=tests/fuzz/$$t.dict; \
		log=$(FUZZ_BUILD)/logs/$$t.log; \
		if $(FUZZ_BUILD)/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
			-artifact_prefix=$(FUZZ_BUILD)/crashes/$$t- $$dict $(FUZZ_FLAGS) \
			$$dirs >$$log 2>&1; then \
			echo "  fuzz $$t: $$(grep -E '^Done [0-9]+ runs' $$log)," \
				"$$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' $$log | tail -n1)"; \
		else \
			tail -n 40 $$log; \
			echo "  fuzz $$t: CRASH (log $$log, input in $(FUZZ_BUILD)/crashes/)"; \
			fail=1; \
		fi; \
	done; \
	exit $$fail

fuzz-regress: fuzz-build
	$(Q)fail=0; \
	for t in $(FUZZ_TARGETS); do \
		dirs=tests/fuzz/corpus/$$t; \
		[ -d tests/fuzz/regress/$$t ] && dirs="$$dirs tests/fuzz/regress/$$t"; \
		$(FUZZ_BUILD)/fuzz_$$t -runs=0 $$dirs >/dev/null 2>&1 && echo "  ok $$t" || \
			{ echo "  FAILED $$t: $(FUZZ_BUILD)/fuzz_$$t -runs=0 $$dirs"; fail=1; }; \
	done; \
	exit $$fail

# The replay programs, built and run with the unit tests.
$(FUZZ_TESTS): $(BUILD)/tests/test_fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/driver.c tests/fuzz/fuzz.h $(LIB)
	$(Q)mkdir -p $(dir $@)
	$(Q)$(CC) $(KCFLAGS) -Itests/fuzz -DFUZZ_NAME='"$*"' $< tests/fuzz/driver.c $(LIB) -o $@ \
		$(LDFLAGS) $(LDLIBS)

unit test: $(FUZZ_TESTS)

-include $(shell find $(FUZZ_BUILD)/obj -name '*.d' 2>/dev/null)
