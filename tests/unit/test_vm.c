/* test_vm.c - what core/vm.c demands before vmsh acts on a guest. */
#include "unit.h"

#include <stdlib.h>

#include "core/vm.h"

static struct vm *ready_vm(void)
{
	struct vm *vm = calloc(1, sizeof(*vm));
	assert_non_null(vm);
	vm->info.ksyms_ok = vm->info.slots_ok = vm->info.mem_ok = true;
	vm->info.n_iomem = 3;
	return vm;
}

static void test_everything_known_is_enough(void **state)
{
	struct vm *vm = ready_vm();
	struct vmsh_err err = { 0 };
	assert_int_equal(vm_need_kernel(vm, &err), 0);
	free(vm);
}

/* Without the guest's RAM map a session used to go ahead on the provisional
 * map and the guest's drivers stalled 40 s on devices vmsh could not serve
 * (seen when the page-table root went stale): refuse up front, saying why. */
static void test_no_ram_map_is_refused_with_its_reason(void **state)
{
	struct vm *vm = ready_vm();
	vm->info.n_iomem = 0;
	snprintf(vm->info.ram_error, sizeof(vm->info.ram_error), "iomem_resource at 0x1 does not look like a resource tree");
	struct vmsh_err err = { 0 };
	assert_int_equal(vm_need_kernel(vm, &err), -1);
	assert_non_null(strstr(err.msg, "RAM map could not be read: iomem_resource at 0x1"));
	free(vm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_everything_known_is_enough),
		cmocka_unit_test(test_no_ram_map_is_refused_with_its_reason),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
