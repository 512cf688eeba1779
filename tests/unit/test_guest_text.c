/* test_guest_text.c - text that comes from the guest (or from other users'
 * processes) on its way to root's terminal: bounded and with every control
 * character escaped (src/common/escape.c and its users). */
#include "unit.h"

#include "common/escape.h"
#include "loader/kernel_lib.h"

static bool has_control(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
			return true;
	return false;
}

/* The library's message lives in guest-writable memory: no NUL, terminal
 * escapes. Old code read it with %s (past the end of the channel) and put
 * it into the error raw. */
static void test_library_message_is_bounded_and_escaped(void **state)
{
	(void)state;
	struct vmsh_channel *c = malloc(sizeof(*c)); /* exactly: ASan sees any read past it */
	assert_non_null(c);
	memset(c, 0, sizeof(*c));
	c->state = VMSH_LIB_DONE;
	c->error = -5;
	memset(c->message, 'A', sizeof(c->message));
	memcpy(c->message, "\x1b]0;owned\x07\x1b[2J\r\n", 16);
	struct kernel_lib kl;
	memset(&kl, 0, sizeof(kl));
	kl.chan = c;
	struct vmsh_err err = { 0 };
	assert_int_equal(klib_wait(&kl, 0, &err), -1);
	assert_false(has_control(err.msg));
	assert_non_null(strstr(err.msg, "AAAA"));
	free(c);
}

static void test_escape_basics(void **state)
{
	(void)state;
	char b[64];
	assert_string_equal(esc_str(b, sizeof(b), "Linux version 6.1 (gcc) #1"), "Linux version 6.1 (gcc) #1");
	assert_string_equal(esc_str(b, sizeof(b), "a\x1b[2Jb\x07\r\n\t\x7f\xc3\xa9"),
			    "a\\x1b[2Jb\\x07\\r\\n\\t\\x7f\\xc3\\xa9");
	assert_string_equal(esc_str(b, sizeof(b), ""), "");
	assert_string_equal(esc_str(b, sizeof(b), NULL), "");
	/* idempotent: escaped text passes a second escaping printer unchanged */
	char c[64];
	esc_str(b, sizeof(b), "x\x1b]0;t\x07y\\z");
	assert_string_equal(esc_str(c, sizeof(c), b), b);
}

static void test_escape_bounds(void **state)
{
	(void)state;
	/* never reads past len (no NUL needed), never writes past cap, and
	 * never cuts an escape in half */
	uint8_t *src = malloc(8);
	memcpy(src, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
	char b[ESC_SIZE(8)];
	esc_bytes(b, sizeof(b), src, 8);
	assert_int_equal(strlen(b), 32);
	char small[10];
	memset(small, 'Z', sizeof(small));
	esc_bytes(small, sizeof(small), src, 8);
	assert_string_equal(small, "\\x01\\x02");
	char one[1];
	esc_bytes(one, 1, src, 8);
	assert_int_equal(one[0], 0);
	free(src);
	/* every byte value */
	struct unit_rng r = { 9 };
	for (int round = 0; round < 1000; round++) {
		uint8_t in[64];
		for (size_t i = 0; i < sizeof(in); i++)
			in[i] = (uint8_t)unit_rand64(&r);
		char out[ESC_SIZE(64)];
		size_t cap = 1 + unit_rand64(&r) % sizeof(out);
		esc_bytes(out, cap, in, sizeof(in));
		assert_true(strlen(out) < cap);
		assert_false(has_control(out));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_library_message_is_bounded_and_escaped),
		cmocka_unit_test(test_escape_basics),
		cmocka_unit_test(test_escape_bounds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
