/* procfs.h - reading another process's /proc entries: tasks, fds, maps. */
#ifndef VMSH_PROCFS_H
#define VMSH_PROCFS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/err.h"

/* Read a whole (small) file into a NUL-terminated malloc'd buffer. */
int procfs_read_file(const char *path, char **out, size_t *len, struct vmsh_err *err);

/* Thread ids of pid, sorted ascending. */
int procfs_list_tasks(pid_t pid, pid_t **tids, size_t *n, struct vmsh_err *err);

struct proc_fd {
	int fd;
	char target[256]; /* readlink of /proc/PID/fd/N */
};
int procfs_list_fds(pid_t pid, struct proc_fd **fds, size_t *n, struct vmsh_err *err);

struct proc_map {
	uint64_t start, end, offset;
	char perms[5];
	uint64_t dev; /* major << 32 | minor */
	uint64_t inode;
	char path[256]; /* "" for anonymous */
};
int procfs_read_maps(pid_t pid, struct proc_map **maps, size_t *n, struct vmsh_err *err);
/* Parse one line of /proc/PID/maps; returns 0 on success. */
int procfs_parse_map_line(const char *line, struct proc_map *m);

/* A mapping as /proc/PID/smaps describes it: what vmsh needs of it. */
struct proc_vma {
	uint64_t start, end;
	uint64_t rss;       /* resident bytes */
	bool dontfork;      /* VmFlags "dc": left out of a fork (MADV_DONTFORK) */
	bool shared;        /* "sh": MAP_SHARED */
	bool hugetlb;       /* "ht": hugetlbfs pages */
};
/* Parse smaps text (NUL-terminated): *n mappings into a malloc'd array. */
int procfs_parse_smaps(const char *text, struct proc_vma **vmas, size_t *n, struct vmsh_err *err);
int procfs_read_smaps(pid_t pid, struct proc_vma **vmas, size_t *n, struct vmsh_err *err);

/* The kernel task flags (field 9 of /proc/PID/task/TID/stat). */
int procfs_task_flags(pid_t pid, pid_t tid, unsigned long *flags);
/* Executable path of pid (readlink /proc/PID/exe). */
int procfs_exe(pid_t pid, char *buf, size_t len);
/* NUL-separated command line; returns number of args, argv points into *buf. */
int procfs_cmdline(pid_t pid, char **buf, char ***argv, struct vmsh_err *err);

#define PF_KTHREAD_FLAG 0x00200000UL
#define PF_USER_WORKER_FLAG 0x00004000UL
#define PF_IO_WORKER_FLAG 0x00000010UL

#endif
