/* exec.c - dm programs run to completion from a threaded server (serve.h). */
#define _GNU_SOURCE /* pipe2 */
#include "serve.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define EXEC_MAX_OUT (64u << 20)

/* The last non-empty line of buf (malloc'd), or NULL. */
static char *
exec_last_line(const dm_buf *buf)
{
	size_t end = buf->len;

	while (end > 0 && (buf->data[end - 1] == '\n' || buf->data[end - 1] == ' '))
		end--;
	if (end == 0)
		return NULL;
	size_t start = end;
	while (start > 0 && buf->data[start - 1] != '\n')
		start--;
	return dm_xstrndup(buf->data + start, end - start);
}

int
serve_exec(char *const argv[], char **out, char **err)
{
	int opipe[2] = { -1, -1 }, epipe[2] = { -1, -1 };
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none;
	pid_t pid = -1;
	dm_buf obuf = { 0 }, ebuf = { 0 };
	int status = -1, rc;

	*out = NULL;
	*err = NULL;
	if (pipe2(opipe, O_CLOEXEC) < 0 || pipe2(epipe, O_CLOEXEC) < 0) {
		*err = dm_xasprintf("pipe: %s", strerror(errno));
		goto out;
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, opipe[1], 1);
	posix_spawn_file_actions_adddup2(&fa, epipe[1], 2);
	posix_spawnattr_init(&attr);
	sigemptyset(&none);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
	rc = posix_spawnp(&pid, argv[0], &fa, &attr, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	close(opipe[1]);
	close(epipe[1]);
	opipe[1] = epipe[1] = -1;
	if (rc != 0) {
		*err = dm_xasprintf("cannot run %s: %s", argv[0], strerror(rc));
		pid = -1;
		goto out;
	}
	struct pollfd fds[2] = { { opipe[0], POLLIN, 0 }, { epipe[0], POLLIN, 0 } };
	int open_fds = 2;
	while (open_fds > 0) {
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (int i = 0; i < 2; i++) {
			if (fds[i].fd < 0 || fds[i].revents == 0)
				continue;
			char chunk[65536];
			ssize_t n = read(fds[i].fd, chunk, sizeof chunk);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				fds[i].fd = -1;
				open_fds--;
				continue;
			}
			dm_buf *b = i == 0 ? &obuf : &ebuf;
			if (i == 1 && b->len > 65536) {
				/* keep the end of stderr, where the failure is told */
				memmove(b->data, b->data + b->len - 4096, 4096);
				b->len = 4096;
			}
			if (i == 0 && b->len + (size_t)n > EXEC_MAX_OUT)
				continue;
			dm_buf_append(b, chunk, (size_t)n);
		}
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	status = WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
	dm_buf_putc(&obuf, '\0');
	*out = obuf.data;
	obuf.data = NULL;
	*err = exec_last_line(&ebuf);
out:
	for (int i = 0; i < 2; i++) {
		if (opipe[i] >= 0)
			close(opipe[i]);
		if (epipe[i] >= 0)
			close(epipe[i]);
	}
	dm_buf_free(&obuf);
	dm_buf_free(&ebuf);
	return status;
}
