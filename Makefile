# vmsh - build and test.
#   make            build/vmsh (release) 
#   make san        build/san/vmsh (ASan + UBSan, what the tests run)
#   make check      everything: unit tests, API tests on KVM, end-to-end tests on real guests
#   make check-unit / check-kernel / check-api / check-vm
#   make check-matrix   every guest configuration;  make soak   long repetitions
#   make fuzz / check-fuzz  libFuzzer targets (tests/fuzz/fuzz.mk)

CC ?= gcc
BUILD ?= build
PKGS := json-c liburing
WARN := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
CFLAGS_BASE := -std=gnu11 $(WARN) -g -Isrc -Iguest-lib $(shell pkg-config --cflags $(PKGS)) -D_GNU_SOURCE
CFLAGS ?= -O2
LIBS := $(shell pkg-config --libs $(PKGS))
SANFLAGS := -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

LIB_SRCS := $(wildcard src/common/*.c src/tracer/*.c src/kvm/*.c src/guest/*.c src/loader/*.c src/devices/*.c src/console/*.c) \
	    $(filter-out src/cli/main.c,$(wildcard src/cli/*.c))
MAIN_SRC := src/cli/main.c
HDRS := $(wildcard src/*/*.h) guest-lib/channel.h

UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/unit/%,$(UNIT_SRCS))

PYTEST ?= /usr/bin/python3 -m pytest

.PHONY: all san check check-unit check-kernel check-api check-api-relay check-api-kvm check-vm check-matrix soak clean fixtures
all: $(BUILD)/vmsh
san: $(BUILD)/san/vmsh

# the kernel library, built for the guest kernel's context and embedded in vmsh
GUEST_LIB_CFLAGS := -std=gnu11 -O2 -Wall -Wextra -Werror -ffreestanding -fno-pic -mcmodel=large \
	-mno-red-zone -mgeneral-regs-only -fno-stack-protector -fcf-protection=branch \
	-fno-asynchronous-unwind-tables -fno-jump-tables -fno-builtin -fno-common \
	-fno-tree-loop-distribute-patterns -Iguest-lib
GUEST_LIB := $(BUILD)/guest-lib/vmsh-lib.o

$(BUILD)/guest-lib/%.o: guest-lib/%.c guest-lib/channel.h
	@mkdir -p $(@D)
	$(CC) $(GUEST_LIB_CFLAGS) -c -o $@ $<
$(BUILD)/guest-lib/%.o: guest-lib/%.S
	@mkdir -p $(@D)
	$(CC) $(GUEST_LIB_CFLAGS) -c -o $@ $<
$(GUEST_LIB): $(BUILD)/guest-lib/vmsh_lib.o $(BUILD)/guest-lib/entry.o
	$(LD) -r -o $@ $^

# the library (everything but main.c), once optimized and once sanitized
REL_OBJS := $(patsubst src/%.c,$(BUILD)/obj/%.o,$(LIB_SRCS)) $(BUILD)/obj/loader/lib_blob.o
SAN_OBJS := $(patsubst src/%.c,$(BUILD)/san/obj/%.o,$(LIB_SRCS)) $(BUILD)/obj/loader/lib_blob.o

$(BUILD)/obj/loader/lib_blob.o: src/loader/lib_blob.S $(GUEST_LIB)
	@mkdir -p $(@D)
	$(CC) -c -Wa,-I$(BUILD)/guest-lib -o $@ $<

$(BUILD)/obj/%.o: src/%.c $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_BASE) $(CFLAGS) -c -o $@ $<

$(BUILD)/san/obj/%.o: src/%.c $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_BASE) $(SANFLAGS) -c -o $@ $<

$(BUILD)/libvmsh.a: $(REL_OBJS)
	$(AR) rcs $@ $^

$(BUILD)/san/libvmsh.a: $(SAN_OBJS)
	$(AR) rcs $@ $^

# what vmsh attach puts into the guest, embedded into the executable
$(BUILD)/toolbox.img: tools/build-toolbox.sh
	@mkdir -p $(@D)
	sh tools/build-toolbox.sh $@
$(BUILD)/obj/cli/blobs.o: src/cli/blobs.S $(BUILD)/vmsh-helper $(BUILD)/toolbox.img
	@mkdir -p $(@D)
	$(CC) -c -Wa,-I$(BUILD) -o $@ $<

$(BUILD)/vmsh: $(MAIN_SRC) $(BUILD)/libvmsh.a $(BUILD)/obj/cli/blobs.o
	$(CC) $(CFLAGS_BASE) $(CFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/san/vmsh: $(MAIN_SRC) $(BUILD)/san/libvmsh.a $(BUILD)/obj/cli/blobs.o
	$(CC) $(CFLAGS_BASE) $(SANFLAGS) -o $@ $^ $(LIBS)

# objects the loader test loads and runs (built as the kernel library is, minus the kernel)
LOADER_SAMPLES := $(BUILD)/unit/loader_sample_large.o $(BUILD)/unit/loader_sample_small.o
SAMPLE_CFLAGS := -O2 -ffreestanding -fno-pic -fno-stack-protector -fno-asynchronous-unwind-tables
$(BUILD)/unit/loader_sample_large.o: tests/unit/loader_sample.c
	@mkdir -p $(@D)
	$(CC) $(SAMPLE_CFLAGS) -mcmodel=large -c -o $@ $<
$(BUILD)/unit/loader_sample_small.o: tests/unit/loader_sample.c
	@mkdir -p $(@D)
	$(CC) $(SAMPLE_CFLAGS:-fno-pic=-fpie) -mcmodel=small -c -o $@ $<

$(BUILD)/unit/%: tests/unit/%.c tests/unit/unit.h $(BUILD)/san/libvmsh.a $(LOADER_SAMPLES)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_BASE) $(SANFLAGS) -Itests/unit -DLOADER_SAMPLE_DIR='"$(abspath $(BUILD)/unit)"' \
		-o $@ $< $(BUILD)/san/libvmsh.a $(LIBS) -lcmocka

-include tests/fixtures/fixtures.mk
-include guest-helper/helper.mk
-include tests/fuzz/fuzz.mk

check-unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done

# The API tier: the relay tests run here; the KVM tests (marker kvm) run on
# this machine's /dev/kvm or, without one, inside the emulated KVM host
# (tests/api/kvm_tier.py; VMSH_API_MODE=host|emulated forces the mode).
check-api: check-api-relay check-api-kvm
check-api-relay: $(BUILD)/san/vmsh fixtures
	VMSH_BIN=$(abspath $(BUILD)/san/vmsh) $(PYTEST) -p no:cacheprovider -v -m "not kvm" tests/api
check-api-kvm: $(BUILD)/san/vmsh $(BUILD)/kvm_plumbing fixtures
	VMSH_BIN=$(abspath $(BUILD)/san/vmsh) /usr/bin/python3 tests/api/kvm_tier.py

# Real guests: every feature on every guest config, with short repetition
# counts; check-matrix adds the configurations outside the representative
# slice (marker matrix), soak runs the long versions of the repeated tests.
# Guest consoles and boots inside the emulated host are slow and machines
# differ (a serial line of ~400 bytes/s measured on one): twice the timeouts.
VMSH_TEST_TIMEOUT_SCALE ?= 2
export VMSH_TEST_TIMEOUT_SCALE
# Two workers (pytest-xdist), each with its own emulated KVM host: one L1 per
# core; the tests that share a guest stay on one worker (conftest.py).
VM_WORKERS ?= 2
VM_PYTEST := VMSH_BIN=$(abspath $(BUILD)/san/vmsh) $(PYTEST) -p no:cacheprovider -v --durations=30 \
	$(if $(filter-out 0 1,$(VM_WORKERS)),-n $(VM_WORKERS) --dist loadgroup)
check-vm: $(BUILD)/san/vmsh
	$(VM_PYTEST) -m "not matrix" tests/vm
check-matrix: $(BUILD)/san/vmsh
	$(VM_PYTEST) tests/vm
soak: $(BUILD)/san/vmsh
	VMSH_SOAK=1 $(VM_PYTEST) -m soak tests/vm

check-kernel: $(BUILD)/ksymtab_dump
	$(PYTEST) -v tests/kernel

check: check-unit check-kernel check-fuzz check-api check-vm

clean:
	rm -rf $(BUILD)

$(BUILD)/ksymtab_dump: tests/kernel/ksymtab_dump.c $(BUILD)/san/libvmsh.a
	$(CC) $(CFLAGS_BASE) $(SANFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/kvm_plumbing: tests/api/kvm_plumbing.c $(BUILD)/san/libvmsh.a
	$(CC) $(CFLAGS_BASE) $(SANFLAGS) -o $@ $^ $(LIBS)
