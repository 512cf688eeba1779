/* spawn.c - start the command: in its own session, on a new pseudo-terminal
 * (interactive use) or on three pipes (binary-safe, stdout and stderr apart),
 * with a small clean environment; and stop it again. */
#include "helper.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static int try_pty(const char *ptmx, int *master, int *slave)
{
	int m = open(ptmx, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (m < 0)
		return -1;
	char name[64];
	if (grantpt(m) < 0 || unlockpt(m) < 0 || ptsname_r(m, name, sizeof(name)) != 0) {
		int e = errno;
		close(m);
		errno = e;
		return -1;
	}
	int s = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (s < 0) {
		int e = errno;
		close(m);
		errno = e;
		return -1;
	}
	*master = m;
	*slave = s;
	return 0;
}

static int open_pty(bool may_mount_devpts, int *master, int *slave, struct vmsh_err *err)
{
	if (try_pty("/dev/ptmx", master, slave) == 0)
		return 0;
	int e = errno;
	/* A guest without devpts (minimal VMs): our own instance, in our
	 * private mount namespace only. */
	struct stat st;
	if (may_mount_devpts && stat("/dev/pts", &st) == 0 && S_ISDIR(st.st_mode) &&
	    mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620") == 0 &&
	    try_pty("/dev/pts/ptmx", master, slave) == 0)
		return 0;
	return vmsh_error(err, e, "allocate a pseudo-terminal (/dev/ptmx)");
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* dup2 that also works when the fd already has the number (then dup2 would
 * leave close-on-exec set). */
static int move_fd(int from, int to)
{
	if (from == to)
		return fcntl(to, F_SETFD, 0);
	return dup2(from, to);
}

static void __attribute__((noreturn)) exec_command(const struct helper_args *a, int in, int out, int errfd)
{
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	static const int reset[] = { SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD, SIGTTOU, SIGTTIN };
	for (size_t i = 0; i < sizeof(reset) / sizeof(reset[0]); i++)
		signal(reset[i], SIG_DFL);
	/* if the helper dies, the command must not linger in the guest */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (setsid() < 0)
		_exit(126);
	if (a->pty && ioctl(in, TIOCSCTTY, 0) < 0)
		_exit(126);
	if (move_fd(in, 0) < 0 || move_fd(out, 1) < 0 || move_fd(errfd, 2) < 0)
		_exit(126);
	/* --guest-root: the guest's own root (with its own mounts below it),
	 * not the image, like nsenter -t PID -a */
	if (a->guest_root && (chroot(GUEST_ROOT_DIR) < 0 || chdir("/") < 0)) {
		static const char msg[] = "vmsh-helper: cannot enter the guest's root\n";
		if (write(2, msg, sizeof(msg) - 1) < 0) {
			/* the exit code still tells */
		}
		_exit(126);
	}

	clearenv();
	setenv("PATH", HELPER_PATH, 1);
	struct stat st;
	setenv("HOME", stat("/root", &st) == 0 && S_ISDIR(st.st_mode) ? "/root" : "/", 1);
	if (a->pty && a->term)
		setenv("TERM", a->term, 1);

	execvp(a->cmd[0], a->cmd);

	int e = errno, code = 126;
	char msg[512];
	if (e == ENOENT || e == ENOTDIR) {
		code = 127;
		snprintf(msg, sizeof(msg), "%s: not found\n", a->cmd[0]);
	} else if (e == EACCES || e == EPERM || e == EISDIR || e == ENOEXEC) {
		snprintf(msg, sizeof(msg), "%s: Permission denied\n", a->cmd[0]);
	} else {
		snprintf(msg, sizeof(msg), "%s: %s\n", a->cmd[0], strerror(e));
	}
	if (write(2, msg, strlen(msg)) < 0) {
		/* the exit code still tells */
	}
	_exit(code);
}

int spawn_command(const struct helper_args *a, bool may_mount_devpts, struct child *c, struct vmsh_err *err)
{
	*c = (struct child){ .pid = -1, .master = -1, .in_fd = -1, .out_fd = -1, .err_fd = -1 };
	int slave = -1, in[2] = { -1, -1 }, out[2] = { -1, -1 }, errp[2] = { -1, -1 };

	if (a->pty) {
		if (open_pty(may_mount_devpts, &c->master, &slave, err) < 0)
			return -1;
		struct winsize ws = { .ws_row = (unsigned short)a->rows, .ws_col = (unsigned short)a->cols };
		if (ioctl(c->master, TIOCSWINSZ, &ws) < 0 || set_nonblock(c->master) < 0) {
			vmsh_error(err, errno, "set up the pseudo-terminal");
			goto fail;
		}
	} else {
		if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0) {
			vmsh_error(err, errno, "create pipes");
			goto fail;
		}
		c->in_fd = in[1];
		c->out_fd = out[0];
		c->err_fd = errp[0];
		in[1] = out[0] = errp[0] = -1;
		if (set_nonblock(c->in_fd) < 0 || set_nonblock(c->out_fd) < 0 || set_nonblock(c->err_fd) < 0) {
			vmsh_error(err, errno, "set up pipes");
			goto fail;
		}
	}

	c->pid = fork();
	if (c->pid < 0) {
		vmsh_error(err, errno, "fork");
		goto fail;
	}
	if (c->pid == 0) {
		if (a->pty)
			exec_command(a, slave, slave, slave);
		exec_command(a, in[0], out[1], errp[1]);
	}
	close_fd(&slave);
	close_fd(&in[0]);
	close_fd(&out[1]);
	close_fd(&errp[1]);
	return 0;

fail:
	close_fd(&slave);
	for (int i = 0; i < 2; i++) {
		close_fd(&in[i]);
		close_fd(&out[i]);
		close_fd(&errp[i]);
	}
	spawn_close(c);
	return -1;
}

bool spawn_reap(struct child *c)
{
	if (c->exited || c->pid <= 0)
		return c->exited;
	int st;
	pid_t p;
	do
		p = waitpid(c->pid, &st, WNOHANG);
	while (p < 0 && errno == EINTR);
	if (p == c->pid) {
		c->exited = true;
		c->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	} else if (p < 0 && errno == ECHILD) {
		c->exited = true; /* reaped elsewhere; status unknown */
		c->status = 255;
	}
	return c->exited;
}

static bool wait_reaped(struct child *c, int ms)
{
	for (int waited = 0; !spawn_reap(c) && waited < ms; waited += 10) {
		struct timespec t = { 0, 10 * 1000 * 1000 };
		nanosleep(&t, NULL);
	}
	return c->exited;
}

static void signal_groups(const pid_t *groups, size_t n, int sig)
{
	for (size_t i = 0; i < n; i++)
		if (groups[i] > 1)
			kill(-groups[i], sig);
}

void spawn_kill(struct child *c)
{
	if (c->pid <= 0 || c->exited) {
		spawn_close(c);
		return;
	}
	pid_t groups[2] = { c->pid, -1 };
	if (c->master >= 0) {
		pid_t fg = tcgetpgrp(c->master);
		if (fg > 1 && fg != c->pid && fg != getpgrp())
			groups[1] = fg;
	}
	signal_groups(groups, 2, SIGHUP);
	signal_groups(groups, 2, SIGCONT);
	spawn_close(c); /* hangs up the pty */
	if (wait_reaped(c, 1000))
		return;
	signal_groups(groups, 2, SIGKILL);
	wait_reaped(c, 2000);
}

void spawn_hangup(struct child *c)
{
	/* the group outlives its leader while members remain, so its id is
	 * not reused: this reaches only what the command left behind */
	if (c->pid > 1) {
		kill(-c->pid, SIGHUP);
		kill(-c->pid, SIGCONT);
	}
}

void spawn_close(struct child *c)
{
	close_fd(&c->master);
	close_fd(&c->in_fd);
	close_fd(&c->out_fd);
	close_fd(&c->err_fd);
}
