/* cmd_list.c - `vmsh list`: the KVM VMs on this host, without stopping any. */
#include <getopt.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/vmlist.h"
#include "common/escape.h"

static void usage(FILE *out)
{
	fprintf(out, "usage: vmsh list [-j]\n\n"
		     "List processes that run a KVM virtual machine: PID, owner (real uid), executable, vCPUs, guest RAM\n"
		     "(from the command line, or the largest writable mapping, marked '~'), and the VM name\n"
		     "given on the command line (qemu -name). No VM is stopped.\n\n"
		     "options:\n"
		     "  -j, --json  machine-readable output (see README.md for the format)\n"
		     "  -h, --help  this help\n");
}

int cmd_list(int argc, char **argv)
{
	static const struct option opts[] = { { "json", no_argument, 0, 'j' }, { "help", no_argument, 0, 'h' }, { 0 } };
	int json = 0, c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "jh", opts, NULL)) != -1) {
		if (c == 'j')
			json = 1;
		else if (c == 'h') {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return EXIT_VMSH_USAGE;
		}
	}
	struct vmsh_err err = { 0 };
	struct vm_entry *vms;
	size_t n, unreadable;
	if (vm_list(&vms, &n, &unreadable, &err) < 0)
		return report_error("list", &err);
	if (unreadable)
		fprintf(stderr, "vmsh list: %zu processes could not be read: VMs among them are not listed "
			"(run as root or with CAP_SYS_PTRACE)\n", unreadable);
	if (json) {
		json_object *top = json_head(), *arr = json_object_new_array();
		json_object_object_add(top, "unreadable", json_object_new_int64((int64_t)unreadable));
		json_object_object_add(top, "processes", arr);
		for (size_t i = 0; i < n; i++) {
			json_object *o = json_object_new_object();
			json_object_object_add(o, "pid", json_object_new_int(vms[i].pid));
			json_object_object_add(o, "uid", json_object_new_int64((int64_t)vms[i].uid));
			json_object_object_add(o, "exe", json_object_new_string(vms[i].exe));
			json_object_object_add(o, "name", vms[i].name[0] ? json_object_new_string(vms[i].name) : NULL);
			json_object_object_add(o, "vms", json_object_new_int((int)vms[i].n_vms));
			json_object_object_add(o, "vcpus", json_object_new_int((int)vms[i].n_vcpus));
			json_object_object_add(o, "ram_bytes", json_object_new_int64((int64_t)vms[i].ram_bytes));
			json_object_object_add(o, "ram_source",
					       vms[i].ram_source ? json_object_new_string(vms[i].ram_source) : NULL);
			json_object_array_add(arr, o);
		}
		puts(json_object_to_json_string_ext(top, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
		json_object_put(top);
	} else {
		printf("%-8s %-6s %-5s %-10s %-20s %s\n", "PID", "UID", "VCPUS", "RAM", "NAME", "EXECUTABLE");
		for (size_t i = 0; i < n; i++) {
			char ram[32] = "?";
			if (vms[i].ram_bytes)
				snprintf(ram, sizeof(ram), "%s%llu MiB",
					 vms[i].ram_source && !strcmp(vms[i].ram_source, "cmdline") ? "" : "~",
					 (unsigned long long)(vms[i].ram_bytes >> 20));
			/* name and executable belong to whoever started the VM */
			char name[ESC_SIZE(sizeof(vms[i].name))], exe[ESC_SIZE(sizeof(vms[i].exe))];
			printf("%-8d %-6u %-5zu %-10s %-20s %s%s\n", vms[i].pid, (unsigned)vms[i].uid, vms[i].n_vcpus, ram,
			       vms[i].name[0] ? esc_str(name, sizeof(name), vms[i].name) : "-",
			       esc_str(exe, sizeof(exe), vms[i].exe), vms[i].n_vms > 1 ? " (several VMs)" : "");
		}
	}
	free(vms);
	return 0;
}
