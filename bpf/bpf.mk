# BPF objects and skeletons (included by the top Makefile).
# bpf/*.bpf.c -> $(BUILD)/bpf/*.bpf.o -> $(BUILD)/bpf/*.skel.h; vmlinux.h is
# generated from the running kernel's BTF into $(BUILD)/bpf, never committed.

BPF_DIR    := $(BUILD)/bpf
BPF_SRCS   := $(wildcard bpf/*.bpf.c)
BPF_OBJS   := $(patsubst bpf/%.bpf.c,$(BPF_DIR)/%.bpf.o,$(BPF_SRCS))
BPF_SKELS  := $(patsubst bpf/%.bpf.c,$(BPF_DIR)/%.skel.h,$(BPF_SRCS))
BPF_ARCH   := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')
BPF_CC     ?= clang
BPFTOOL    ?= bpftool
# -D defines given in CFLAGS reach the BPF objects too, so both sides of
# kepp_abi.h agree (e.g. CFLAGS=-DKEPP_MAX_SERVICES=128).
BPF_CFLAGS := -g -O2 -target bpf -D__TARGET_ARCH_$(BPF_ARCH) -Wall -Werror \
              -I$(BPF_DIR) -Ibpf $(filter -D%,$(CFLAGS))

PKGS    += libbpf libxdp
KCFLAGS += -I$(BPF_DIR) -Ibpf

$(BPF_DIR)/vmlinux.h: | deps
	$(Q)mkdir -p $(dir $@)
	$(Q)$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp
	$(Q)mv $@.tmp $@

$(BPF_DIR)/%.bpf.o: bpf/%.bpf.c $(BPF_DIR)/vmlinux.h $(wildcard bpf/*.h bpf/lib/*.h)
	@echo "  BPF $<"
	$(Q)$(BPF_CC) $(BPF_CFLAGS) -c $< -o $@

$(BPF_DIR)/%.skel.h: $(BPF_DIR)/%.bpf.o
	$(Q)$(BPFTOOL) gen skeleton $< > $@.tmp
	$(Q)mv $@.tmp $@

# Whatever includes a skeleton: the loader and the BPF tests.
$(filter $(BUILD)/obj/user/kernel/%.o,$(USER_OBJS)): $(BPF_SKELS)
$(filter $(BUILD)/tests/test_kern%,$(UNIT_BINS)): $(BPF_SKELS)
