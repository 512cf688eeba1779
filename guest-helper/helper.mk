# guest-helper/helper.mk - builds the in-guest helper and the relay test fixture.
# Included by the top-level Makefile.
#
#   $(BUILD)/vmsh-helper      static musl binary that runs inside the guest
#   $(BUILD)/san/vmsh-helper  the same code with the host compiler + ASan/UBSan (tests only)
#   $(BUILD)/relay_pair       test fixture: relay_run against a helper in --test-fd mode

BUILD ?= build
MUSL_CC ?= musl-gcc

HELPER_SRCS := $(wildcard guest-helper/*.c) src/common/err.c
HELPER_HDRS := $(wildcard guest-helper/*.h include/vmsh/*.h) src/common/err.h src/common/cleanup.h src/common/clock.h
HELPER_WARN := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
HELPER_CFLAGS := -std=gnu11 $(HELPER_WARN) -D_GNU_SOURCE -Iguest-helper -Iinclude -Isrc

$(BUILD)/vmsh-helper: $(HELPER_SRCS) $(HELPER_HDRS) guest-helper/helper.mk
	@mkdir -p $(@D)
	$(MUSL_CC) $(HELPER_CFLAGS) -Os -static -s -o $@ $(HELPER_SRCS)

$(BUILD)/san/vmsh-helper: $(HELPER_SRCS) $(HELPER_HDRS) guest-helper/helper.mk
	@mkdir -p $(@D)
	$(CC) $(HELPER_CFLAGS) -g $(SANFLAGS) -o $@ $(HELPER_SRCS)

# the host side of the protocol is compiled into libvmsh.a from src/relay/
$(filter %/relay/relay.o,$(REL_OBJS) $(SAN_OBJS)): include/vmsh/helper_proto.h

$(BUILD)/relay_pair: tests/fixtures/relay_pair.c $(BUILD)/san/libvmsh.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_BASE) $(SANFLAGS) -o $@ $^ $(LIBS)

check-api-relay: $(BUILD)/relay_pair $(BUILD)/vmsh-helper $(BUILD)/san/vmsh-helper
