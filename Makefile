# vmsh - build and test.
#   make            build/vmsh (release) 
#   make san        build/san/vmsh (ASan + UBSan, what the tests run)
#   make check      everything: unit tests, API tests on /dev/kvm, end-to-end tests on real guests
#   make check-unit / check-kernel / check-api / check-vm

CC ?= gcc
BUILD ?= build
PKGS := json-c
WARN := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
CFLAGS_BASE := -std=gnu11 $(WARN) -g -Isrc $(shell pkg-config --cflags $(PKGS)) -D_GNU_SOURCE
CFLAGS ?= -O2
LIBS := $(shell pkg-config --libs $(PKGS))
SANFLAGS := -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

LIB_SRCS := $(wildcard src/common/*.c src/tracer/*.c src/kvm/*.c src/guest/*.c) \
	    $(filter-out src/cli/main.c,$(wildcard src/cli/*.c))
MAIN_SRC := src/cli/main.c
HDRS := $(wildcard src/*/*.h)

UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/unit/%,$(UNIT_SRCS))

PYTEST ?= /usr/bin/python3 -m pytest

.PHONY: all san check check-unit check-kernel check-api check-vm clean fixtures
all: $(BUILD)/vmsh
san: $(BUILD)/san/vmsh

$(BUILD)/vmsh: $(LIB_SRCS) $(MAIN_SRC) $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_BASE) $(CFLAGS) -o $@ $(LIB_SRCS) $(MAIN_SRC) $(LIBS)

$(BUILD)/san/vmsh: $(LIB_SRCS) $(MAIN_SRC) $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_BASE) $(SANFLAGS) -o $@ $(LIB_SRCS) $(MAIN_SRC) $(LIBS)

$(BUILD)/unit/%: tests/unit/%.c $(LIB_SRCS) $(HDRS) tests/unit/unit.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_BASE) $(SANFLAGS) -Itests/unit -o $@ $< $(LIB_SRCS) $(LIBS) -lcmocka

-include tests/fixtures/fixtures.mk

check-unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done

check-api: $(BUILD)/san/vmsh fixtures
	VMSH_BIN=$(abspath $(BUILD)/san/vmsh) $(PYTEST) -v tests/api

check-vm: $(BUILD)/san/vmsh
	VMSH_BIN=$(abspath $(BUILD)/san/vmsh) $(PYTEST) -v tests/vm

check-kernel: $(BUILD)/ksymtab_dump
	$(PYTEST) -v tests/kernel

check: check-unit check-kernel check-api check-vm

clean:
	rm -rf $(BUILD)

$(BUILD)/ksymtab_dump: tests/kernel/ksymtab_dump.c $(LIB_SRCS) $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_BASE) $(SANFLAGS) -o $@ $< $(LIB_SRCS) $(LIBS)
