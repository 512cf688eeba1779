# tests/fuzz/fuzz.mk - libFuzzer targets for every parser of guest- or
# user-controlled input (tests/fuzz/README.md). Included by the Makefile.
#
#   make fuzz          build with clang + libFuzzer (ASan+UBSan), run each target
#                      FUZZ_SECONDS (default 60) on its corpus
#   make check-fuzz    FUZZ_CHECK_SECONDS (default 8) per target, then replay every corpus and
#                      regression input with the gcc build (plain-main driver)
#   make fuzz-replay   only the replay (gcc; what is left when clang is missing)
#   make check-fuzz-open  replay the crashers of known-open bugs (tests/fuzz/open/):
#                      fails until they are fixed
#   FUZZ_TARGETS="memmap relay_host" to pick targets; FUZZ_TIMEOUT per input (s)

FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_CHECK_SECONDS ?= 8
FUZZ_TIMEOUT ?= 10
FUZZ_ALL := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_TARGETS ?= $(FUZZ_ALL)
FUZZ_SAN := -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer \
	-fsanitize-coverage-ignorelist=tests/fuzz/cov-ignore.txt
FUZZ_HDRS := tests/fuzz/fuzz.h $(wildcard guest-helper/*.h include/vmsh/*.h)
FUZZ_INC := -Itests/fuzz -Iguest-helper -Iinclude
# memmap_refine reads /proc/PID/maps: the target answers with the fuzzed hypervisor's
FUZZ_LDFLAGS_memmap := -Wl,--wrap=procfs_read_maps
# vmlist.c reads /proc/PID/cmdline and maps: the target answers with the fuzzed text
FUZZ_LDFLAGS_procfs := -Wl,--wrap=procfs_cmdline,--wrap=procfs_read_maps

FUZZ_OBJS := $(patsubst src/%.c,$(BUILD)/fuzz/obj/%.o,$(LIB_SRCS))
$(BUILD)/fuzz/obj/%.o: src/%.c tests/fuzz/cov-ignore.txt
	@mkdir -p $(@D)
	$(FUZZ_CC) $(CFLAGS_BASE) $(FUZZ_SAN) -fsanitize=fuzzer-no-link -c -o $@ $<
-include $(FUZZ_OBJS:.o=.d)
$(BUILD)/fuzz/libvmsh.a: $(FUZZ_OBJS)
	$(AR) rcs $@ $^

# clang + libFuzzer
$(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_HDRS) $(BUILD)/fuzz/libvmsh.a
	@mkdir -p $(@D)
	$(FUZZ_CC) $(CFLAGS_BASE) $(FUZZ_SAN) -fsanitize=fuzzer $(FUZZ_INC) -o $@ $< $(BUILD)/fuzz/libvmsh.a \
		$(FUZZ_LDFLAGS_$*) $(LIBS)
# any compiler + driver.c (the sanitized library of make check)
$(BUILD)/fuzz-replay/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/driver.c $(FUZZ_HDRS) $(BUILD)/san/libvmsh.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_BASE) $(SANFLAGS) $(FUZZ_INC) -o $@ $< tests/fuzz/driver.c $(BUILD)/san/libvmsh.a \
		$(FUZZ_LDFLAGS_$*) $(LIBS)

.PHONY: fuzz fuzz-build fuzz-replay check-fuzz check-fuzz-open
fuzz-build: $(addprefix $(BUILD)/fuzz/fuzz_,$(FUZZ_TARGETS))
fuzz: fuzz-build
	sh tests/fuzz/run.sh fuzz $(BUILD) $(FUZZ_SECONDS) $(FUZZ_TIMEOUT) $(FUZZ_TARGETS)
fuzz-replay: $(addprefix $(BUILD)/fuzz-replay/fuzz_,$(FUZZ_TARGETS))
	sh tests/fuzz/run.sh replay $(BUILD) 0 $(FUZZ_TIMEOUT) $(FUZZ_TARGETS)
check-fuzz-open: $(addprefix $(BUILD)/fuzz-replay/fuzz_,$(FUZZ_TARGETS))
	sh tests/fuzz/run.sh open $(BUILD) 0 $(FUZZ_TIMEOUT) $(FUZZ_TARGETS)
# the bounded run needs clang's libFuzzer; without it, the replay still runs
check-fuzz: $(addprefix $(BUILD)/fuzz-replay/fuzz_,$(FUZZ_TARGETS))
	@if printf 'int LLVMFuzzerTestOneInput(const char*d,long n){return 0;}' | \
	    $(FUZZ_CC) -x c -fsanitize=fuzzer,address,undefined -o $(BUILD)/fuzz-probe - 2>/dev/null; then \
		$(MAKE) --no-print-directory fuzz-build FUZZ_TARGETS="$(FUZZ_TARGETS)" && \
		sh tests/fuzz/run.sh fuzz $(BUILD) $(FUZZ_CHECK_SECONDS) $(FUZZ_TIMEOUT) $(FUZZ_TARGETS); \
	else \
		echo "check-fuzz: $(FUZZ_CC) with libFuzzer missing (tools/install-deps.sh): corpus replay only"; \
	fi
	sh tests/fuzz/run.sh replay $(BUILD) 0 $(FUZZ_TIMEOUT) $(FUZZ_TARGETS)
