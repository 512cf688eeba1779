/* json_head.c - what every --json output of vmsh starts with: the format
 * number (a consumer checks it before reading on) and vmsh's version. */
#include <json-c/json.h>

#include "cli/commands.h"

struct json_object *json_head(void)
{
	json_object *o = json_object_new_object();
	json_object_object_add(o, "format", json_object_new_int(JSON_FORMAT));
	json_object_object_add(o, "vmsh_version", json_object_new_string(vmsh_version()));
	return o;
}
