# kepp build. `make` builds build/kepp; `make test` runs every test layer;
# `make demo` runs kepp on simulated model servers; `make asan` runs the
# tests under AddressSanitizer + UBSan. All of them install missing Debian
# packages first (tools/deps.sh).

BUILD   ?= build
CC      ?= gcc
SAN     ?=
V       ?= 0
Q       := $(if $(filter 1,$(V)),,@)

GEN      := $(BUILD)/gen
PYGEN    := $(BUILD)/py
WKT_DIR  := /usr/include
WKT      := google/protobuf/struct.proto google/protobuf/duration.proto \
            google/protobuf/any.proto google/protobuf/wrappers.proto
PROTOS   := $(shell find proto -name '*.proto' | sort)
PROTO_C  := $(patsubst proto/%.proto,$(GEN)/%.pb-c.c,$(PROTOS)) \
            $(patsubst %.proto,$(GEN)/%.pb-c.c,$(WKT))
PROTO_O  := $(patsubst $(GEN)/%.c,$(BUILD)/obj/gen/%.o,$(PROTO_C))

PKGS     := libnghttp2 libevent libevent_pthreads libevent_openssl openssl \
            libprotobuf-c libcjson yaml-0.1 libcurl libxxhash
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

ASAN_UBSAN := -fsanitize=address -fsanitize=undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
SANFLAGS := $(if $(SAN),$(ASAN_UBSAN))
OPT      ?= -O2 -g
KCFLAGS   = $(OPT) -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter -D_GNU_SOURCE -pthread \
            -Iuser -I$(GEN) $(PKG_CFLAGS) $(SANFLAGS) $(CFLAGS)
LDFLAGS  += -pthread $(SANFLAGS)
LDLIBS   += $(PKG_LIBS) -lm

USER_SRCS := $(shell find user -name '*.c' ! -path user/main.c | sort)
USER_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(USER_SRCS))
LIB       := $(BUILD)/libkepp.a

UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRCS))

TOOL_SRCS := $(wildcard tools/*/main.c)
TOOL_BINS := $(patsubst tools/%/main.c,$(BUILD)/%,$(TOOL_SRCS))
BENCH_SRCS := $(wildcard tools/bench/*/main.c)
BENCH_BINS := $(patsubst tools/bench/%/main.c,$(BUILD)/bench-%,$(BENCH_SRCS))

.PHONY: all deps test unit asan demo clean proto-py tools
.DELETE_ON_ERROR:
.SECONDARY:

all: deps $(BUILD)/kepp tools

deps:
	$(Q)sh tools/deps.sh

$(GEN)/google/protobuf/%.pb-c.c $(GEN)/google/protobuf/%.pb-c.h: $(WKT_DIR)/google/protobuf/%.proto | deps
	$(Q)mkdir -p $(GEN)
	$(Q)protoc-c --c_out=$(GEN) -I$(WKT_DIR) $<

$(GEN)/%.pb-c.c $(GEN)/%.pb-c.h: proto/%.proto | deps
	$(Q)mkdir -p $(GEN)
	$(Q)protoc-c --c_out=$(GEN) -Iproto -I$(WKT_DIR) $<

# Every object may include any generated header, so generate them all first.
$(BUILD)/.protos: $(PROTO_C)
	$(Q)touch $@

$(BUILD)/obj/gen/%.o: $(GEN)/%.c $(BUILD)/.protos
	$(Q)mkdir -p $(dir $@)
	$(Q)$(CC) $(KCFLAGS) -Wno-error -c $< -o $@

$(BUILD)/obj/%.o: %.c $(BUILD)/.protos
	$(Q)mkdir -p $(dir $@)
	@echo "  CC $<"
	$(Q)$(CC) $(KCFLAGS) -MMD -MP -c $< -o $@

$(LIB): $(USER_OBJS) $(PROTO_O)
	$(Q)rm -f $@
	$(Q)ar rcs $@ $^

# The commit in inference_extension_info{commit}; "unknown" outside a git tree.
KEPP_COMMIT ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
$(BUILD)/obj/user/main.o: KCFLAGS += -DKEPP_COMMIT='"$(KEPP_COMMIT)"'

$(BUILD)/kepp: $(BUILD)/obj/user/main.o $(LIB)
	@echo "  LD $@"
	$(Q)$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(LIB) tests/harness.h
	$(Q)mkdir -p $(dir $@)
	$(Q)$(CC) $(KCFLAGS) -Itests $< $(LIB) -o $@ $(LDFLAGS) $(LDLIBS)

# Tools are single-folder programs (tools/NAME/*.c) linked against libkepp.
.SECONDEXPANSION:
$(BUILD)/%: tools/%/main.c $$(wildcard tools/$$*/*.c tools/$$*/*.h) $(LIB)
	$(Q)mkdir -p $(dir $@)
	$(Q)$(CC) $(KCFLAGS) $(wildcard tools/$*/*.c) $(LIB) -o $@ $(LDFLAGS) $(LDLIBS)

# Benchmarks in C: tools/bench/NAME/*.c -> $(BUILD)/bench-NAME.
$(BUILD)/bench-%: tools/bench/%/main.c $$(wildcard tools/bench/$$*/*.c tools/bench/$$*/*.h) $(LIB)
	$(Q)mkdir -p $(dir $@)
	$(Q)$(CC) $(KCFLAGS) $(wildcard tools/bench/$*/*.c) $(LIB) -o $@ $(LDFLAGS) $(LDLIBS)

tools: $(TOOL_BINS) $(BENCH_BINS)

# Python message classes for the independent Envoy-role test client.
proto-py: deps
	$(Q)mkdir -p $(PYGEN)
	$(Q)protoc --python_out=$(PYGEN) -Iproto -I$(WKT_DIR) $(PROTOS)

unit: all $(UNIT_BINS)

test: all $(UNIT_BINS) proto-py
	$(Q)BUILD=$(BUILD) sh tests/run.sh

asan: deps
	$(Q)$(MAKE) --no-print-directory BUILD=build-asan SAN=1 OPT="-O1 -g" test

demo: all proto-py
	$(Q)BUILD=$(BUILD) /usr/bin/python3 tools/demo/demo.py

clean:
	rm -rf build build-asan

# Build fragments owned by their folders: BPF objects and skeletons, fuzz targets.
include $(wildcard bpf/bpf.mk tests/fuzz/fuzz.mk)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
