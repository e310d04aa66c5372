/*
 * run.c - runs started over HTTP: each is a `dm-migrate run` in a process group
 * of its own, under a keeper process that records its exit status, so that the
 * run outlives dm-serve (a restarted server finds it again in the state
 * directory, and in dm.run).
 *
 * STATE/runs/ID/ holds: request.json (what was asked, when), log (dm-migrate's
 * stderr, logfmt), keeper (the keeper's pid and start time), exit (the status,
 * once ended), cancelled (present once a cancel was asked).
 */
#define _GNU_SOURCE /* pipe2, O_CLOEXEC, dirfd */
#include "serve.h"
#include "report.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t run_mutex = PTHREAD_MUTEX_INITIALIZER;
static int run_seq;

/* Keepers this process forked and has not reaped yet. */
#define MAX_KEEPERS 256
static pid_t keepers[MAX_KEEPERS];

char *
serve_run_path(const char *run_id, const char *file)
{
	return dm_xasprintf("%s/runs/%s%s%s", serve.state_dir, run_id, file ? "/" : "", file ? file : "");
}

void
serve_strv_free(char **v)
{
	for (char **p = v; p != NULL && *p != NULL; p++)
		free(*p);
	free(v);
}

/* A small file's contents, malloc'd, or NULL. */
static char *
run_read_file(const char *run_id, const char *file)
{
	char *path = serve_run_path(run_id, file);
	FILE *fp = fopen(path, "re");
	char *out = NULL;
	size_t cap = 0;

	free(path);
	if (fp == NULL)
		return NULL;
	ssize_t n = getdelim(&out, &cap, '\0', fp);
	fclose(fp);
	if (n < 0) {
		free(out);
		return NULL;
	}
	return out;
}

/* Writes a small file atomically (a temporary, then rename). 0 or -1. */
static int
run_write_file(const char *run_id, const char *file, const char *text)
{
	char *path = serve_run_path(run_id, file);
	char *tmp = dm_xasprintf("%s.tmp", path);
	FILE *fp = fopen(tmp, "we");
	int rc = -1;

	if (fp != NULL) {
		fputs(text, fp);
		if (fclose(fp) == 0 && rename(tmp, path) == 0)
			rc = 0;
	}
	if (rc < 0)
		serve_log("error", "state", "cannot write %s: %s", path, strerror(errno));
	free(tmp);
	free(path);
	return rc;
}

/* The start time of a process (clock ticks since boot, /proc/PID/stat field 22), or 0. */
static unsigned long long
run_proc_start(pid_t pid)
{
	char path[64], buf[1024];
	unsigned long long start = 0;
	snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	/* The command name may hold spaces and parentheses: fields count from the last ')'. */
	char *p = strrchr(buf, ')');
	if (p == NULL)
		return 0;
	int field = 2;
	for (p++; *p && field < 22; p++)
		if (*p == ' ')
			field++;
	if (field == 22)
		start = strtoull(p, NULL, 10);
	return start;
}

/*
 * The pid of the run's keeper while that same process (pid and start time) is
 * still there, else 0. It leads the run's process group.
 */
static pid_t
run_keeper_pid(const char *run_id)
{
	char *k = run_read_file(run_id, "keeper");
	long pid = 0;
	unsigned long long start = 0;
	pid_t alive = 0;

	if (k != NULL && sscanf(k, "%ld %llu", &pid, &start) == 2 && pid > 1 && kill((pid_t)pid, 0) == 0 &&
	    run_proc_start((pid_t)pid) == start)
		alive = (pid_t)pid;
	free(k);
	return alive;
}

static int
run_exit_status(const char *run_id)
{
	char *e = run_read_file(run_id, "exit");
	int st = -1;
	if (e != NULL) {
		char *end;
		long v = strtol(e, &end, 10);
		if (end != e && v >= 0 && v < 256)
			st = (int)v;
	}
	free(e);
	return st;
}

static int
run_exists(const char *run_id)
{
	char *path = serve_run_path(run_id, "request.json");
	int ok = access(path, F_OK) == 0;
	free(path);
	return ok;
}

/* async-signal-safe: a number into buf, with a newline; its length. */
static size_t
run_fmt_num(char *buf, long long v)
{
	char tmp[24];
	size_t n = 0, k = 0;
	if (v < 0) {
		buf[k++] = '-';
		v = -v;
	}
	do
		tmp[n++] = (char)('0' + v % 10);
	while ((v /= 10) > 0);
	while (n > 0)
		buf[k++] = tmp[--n];
	return k;
}

/*
 * The keeper: in a session of its own, runs each command in turn (the run,
 * then verify if asked) with stderr and stdout appended to the log, stops at
 * the first failure, and writes the last status to exit. Between fork and exit
 * only async-signal-safe calls: the parent is threaded.
 */
static void __attribute__((noreturn))
run_keeper(char *const *argv1, char *const *argv2, const char *log_path, const char *exit_tmp, const char *exit_path,
    const char *migrate)
{
	struct sigaction ign = { 0 }, dfl = { 0 };
	sigset_t none;
	int status = 0;

	ign.sa_handler = SIG_IGN;
	dfl.sa_handler = SIG_DFL;
	setsid();
	/* A cancel signals the whole group; the keeper stays to record the status. */
	sigaction(SIGTERM, &ign, NULL);
	sigaction(SIGINT, &ign, NULL);
	sigaction(SIGHUP, &ign, NULL);
	sigaction(SIGPIPE, &ign, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	int devnull = open("/dev/null", O_RDWR);
	int log = open(log_path, O_WRONLY | O_APPEND | O_CREAT, 0600);
	if (devnull < 0 || log < 0)
		_exit(1);
	dup2(devnull, 0);
	dup2(log, 1);
	dup2(log, 2);
	/* Nothing of the server's (its listening socket, its database connection) stays open. */
	for (int fd = 3; fd < 1024; fd++)
		close(fd);
	char *const *cmds[2] = { argv1, argv2 };
	for (int c = 0; c < 2 && cmds[c] != NULL; c++) {
		pid_t pid = fork();
		if (pid < 0) {
			status = 1;
			break;
		}
		if (pid == 0) {
			sigaction(SIGTERM, &dfl, NULL);
			sigaction(SIGINT, &dfl, NULL);
			sigaction(SIGHUP, &dfl, NULL);
			sigaction(SIGPIPE, &dfl, NULL);
			execv(migrate, cmds[c]);
			_exit(127);
		}
		int ws;
		while (waitpid(pid, &ws, 0) < 0)
			if (errno != EINTR) {
				ws = 1 << 8;
				break;
			}
		status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
		if (status != 0)
			break;
	}
	int fd = open(exit_tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd >= 0) {
		char buf[32];
		size_t n = run_fmt_num(buf, status);
		buf[n++] = '\n';
		if (write(fd, buf, n) == (ssize_t)n && close(fd) == 0)
			rename(exit_tmp, exit_path);
	}
	_exit(0);
}

/* Removes a run's directory (a refused run: nothing started). */
static void
run_remove(const char *run_id)
{
	static const char *const files[] = { "request.json", "log", "keeper", "exit", "exit.tmp", "cancelled", NULL };
	for (int i = 0; files[i] != NULL; i++) {
		char *p = serve_run_path(run_id, files[i]);
		unlink(p);
		free(p);
	}
	char *d = serve_run_path(run_id, NULL);
	rmdir(d);
	free(d);
}

/*
 * The messages of the log's error events (msg="..."; only the "PART failed"
 * ones unless all), joined by "; ", malloc'd, or NULL.
 */
static char *
run_log_errors(const char *run_id, int max, int all)
{
	char *path = serve_run_path(run_id, "log");
	FILE *fp = fopen(path, "re");
	char *line = NULL;
	size_t cap = 0;
	dm_buf b = { 0 };
	int n = 0;

	free(path);
	if (fp == NULL)
		return NULL;
	while (n < max && getline(&line, &cap, fp) > 0) {
		if (strstr(line, " level=error ") == NULL)
			continue;
		line[strcspn(line, "\n")] = '\0';
		json_t *ev = serve_logfmt_parse(line);
		const char *event = json_string_value(json_object_get(ev, "event"));
		const char *msg = json_string_value(json_object_get(ev, "msg"));
		if (msg != NULL && (all || (event != NULL && strcmp(event, "failed") == 0))) {
			if (b.len > 0)
				dm_buf_append(&b, "; ", 2);
			dm_buf_append(&b, msg, strlen(msg));
			n++;
		}
		json_decref(ev);
	}
	free(line);
	fclose(fp);
	if (b.len == 0)
		return NULL;
	dm_buf_putc(&b, '\0');
	return b.data;
}

/* Where run_log_summaries keeps the run's own run_done event: no entity's name. */
#define RUN_DONE_KEY "\001run_done"

/*
 * The summary event of each entity in a run's log ({entity: event}): dm-load
 * records in dm.run what it applied, the driver's summary also counts the rows
 * found unchanged, and times the entity's whole pipeline.
 */
static json_t *
run_log_summaries(const char *run_id)
{
	char *path = serve_run_path(run_id, "log");
	FILE *fp = fopen(path, "re");
	char *line = NULL;
	size_t cap = 0;
	json_t *out = json_object();

	free(path);
	if (fp == NULL)
		return out;
	while (getline(&line, &cap, fp) > 0) {
		int done = strstr(line, " event=run_done ") != NULL;
		if (!done && strstr(line, " event=summary ") == NULL)
			continue;
		line[strcspn(line, "\n")] = '\0';
		json_t *ev = serve_logfmt_parse(line);
		const char *ent = done ? RUN_DONE_KEY : json_string_value(json_object_get(ev, "entity"));
		if (ent != NULL)
			json_object_set(out, ent, ev);
		json_decref(ev);
	}
	free(line);
	fclose(fp);
	return out;
}

/* Does the run's log hold needle? */
static int
run_log_has(const char *run_id, const char *needle)
{
	char *path = serve_run_path(run_id, "log");
	FILE *fp = fopen(path, "re");
	char *line = NULL;
	size_t cap = 0;
	int found = 0;

	free(path);
	if (fp == NULL)
		return 0;
	while (!found && getline(&line, &cap, fp) > 0)
		found = strstr(line, needle) != NULL;
	free(line);
	fclose(fp);
	return found;
}

int
serve_run_start(json_t *request, char **run_id, char **msg)
{
	char id[80], stamp[32], started[40];
	time_t now = time(NULL);
	struct tm tm;
	char **argv1 = NULL, **argv2 = NULL;
	int argc1 = 0, argc2 = 0;
	const size_t maxargs = 32;
	json_t *ents = json_object_get(request, "entities");
	size_t nents = json_array_size(ents);
	*run_id = NULL;
	*msg = NULL;
	gmtime_r(&now, &tm);
	strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
	strftime(started, sizeof started, "%Y-%m-%d %H:%M:%S+00", &tm);
	pthread_mutex_lock(&run_mutex);
	snprintf(id, sizeof id, "%s-%ld-%d", stamp, (long)getpid(), ++run_seq);
	pthread_mutex_unlock(&run_mutex);

	char *runs = dm_xasprintf("%s/runs", serve.state_dir);
	char *dir = serve_run_path(id, NULL);
	if ((mkdir(runs, 0700) < 0 && errno != EEXIST) || mkdir(dir, 0700) < 0) {
		*msg = dm_xasprintf("cannot make the run's directory %s: %s", dir, strerror(errno));
		free(runs);
		free(dir);
		return 500;
	}
	free(runs);
	free(dir);
	json_t *rec = json_deep_copy(request);
	json_object_set_new(rec, "started_at", json_string(started));
	char *text = json_dumps(rec, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(rec);
	int wrote = run_write_file(id, "request.json", text);
	free(text);
	if (wrote < 0) {
		*msg = dm_xstrdup("cannot record the run's request");
		run_remove(id);
		return 500;
	}

	argv1 = dm_xcalloc(maxargs + nents, sizeof *argv1);
	argv2 = dm_xcalloc(maxargs + nents, sizeof *argv2);
	char **v[2] = { argv1, argv2 };
	int *c[2] = { &argc1, &argc2 };
	for (int k = 0; k < 2; k++) {
		v[k][(*c[k])++] = dm_xstrdup("dm-migrate");
		if (serve.spec != NULL) {
			v[k][(*c[k])++] = dm_xstrdup("-c");
			v[k][(*c[k])++] = dm_xstrdup(serve.spec);
		}
		v[k][(*c[k])++] = dm_xstrdup("--log-format");
		v[k][(*c[k])++] = dm_xstrdup("logfmt");
	}
	argv1[argc1++] = dm_xstrdup("--run-id");
	argv1[argc1++] = dm_xstrdup(id);
	argv1[argc1++] = dm_xstrdup("--progress-interval");
	argv1[argc1++] = dm_xstrdup("1");
	if (json_is_true(json_object_get(request, "full")))
		argv1[argc1++] = dm_xstrdup("--full");
	if (json_is_true(json_object_get(request, "delete")))
		argv1[argc1++] = dm_xstrdup("--delete");
	if (json_is_integer(json_object_get(request, "jobs"))) {
		argv1[argc1++] = dm_xstrdup("-j");
		argv1[argc1++] = dm_xasprintf("%lld", (long long)json_integer_value(json_object_get(request, "jobs")));
	}
	argv1[argc1++] = dm_xstrdup("run");
	argv2[argc2++] = dm_xstrdup("verify");
	argv1[argc1++] = dm_xstrdup("--");
	argv2[argc2++] = dm_xstrdup("--");
	for (size_t i = 0; i < nents; i++) {
		argv1[argc1++] = dm_xstrdup(json_string_value(json_array_get(ents, i)));
		argv2[argc2++] = dm_xstrdup(json_string_value(json_array_get(ents, i)));
	}
	int verify = json_is_true(json_object_get(request, "verify"));

	char *log_path = serve_run_path(id, "log");
	char *exit_tmp = serve_run_path(id, "exit.tmp");
	char *exit_path = serve_run_path(id, "exit");
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0)
		run_keeper(argv1, verify ? argv2 : NULL, log_path, exit_tmp, exit_path, serve.migrate);
	free(log_path);
	free(exit_tmp);
	free(exit_path);
	for (int k = 0; k < 2; k++)
		for (int i = 0; i < *c[k]; i++)
			free(v[k][i]);
	free(argv1);
	free(argv2);
	if (pid < 0) {
		*msg = dm_xasprintf("fork: %s", strerror(errno));
		run_remove(id);
		return 500;
	}
	pthread_mutex_lock(&run_mutex);
	for (int i = 0; i < MAX_KEEPERS; i++)
		if (keepers[i] == 0) {
			keepers[i] = pid;
			break;
		}
	pthread_mutex_unlock(&run_mutex);
	char keeper[64];
	snprintf(keeper, sizeof keeper, "%ld %llu\n", (long)pid, run_proc_start(pid));
	run_write_file(id, "keeper", keeper);

	/*
	 * The run's hold decides whether it may start: wait until the run has
	 * started (it holds its entities), or ended; a run refused by another
	 * run's hold (exit 6) never happened.
	 */
	for (int i = 0; i < 300; i++) {
		int st = run_exit_status(id);
		if (st == 6) {
			char *why = run_log_errors(id, 3, 1);
			*msg = dm_xasprintf("another run holds some of these entities%s%s", why ? ": " : "", why ? why : "");
			free(why);
			serve_run_reap();
			run_remove(id);
			return 409;
		}
		if (st >= 0 || run_log_has(id, "event=run_start"))
			break;
		struct timespec ts = { 0, 50 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	serve_log("info", "run_started", "run %s started", id);
	*run_id = dm_xstrdup(id);
	return 0;
}

/*
 * A run asked to cancel that still runs CANCEL_GRACE seconds later (a program
 * stuck in a call that TERM does not end) gets KILL, keeper and all: its state
 * is cancelled all the same, the leases die with the sessions.
 */
#define CANCEL_GRACE 30

static void
run_cancel_escalate(const char *run_id)
{
	char *cp = serve_run_path(run_id, "cancelled");
	struct stat sb;
	int late = stat(cp, &sb) == 0 && time(NULL) - sb.st_mtime > CANCEL_GRACE;
	free(cp);
	pid_t keeper;
	if (!late || run_exit_status(run_id) >= 0 || (keeper = run_keeper_pid(run_id)) == 0)
		return;
	kill(-keeper, SIGKILL);
	serve_log("warn", "run_cancel", "run %s: still running %d s after TERM: KILL to its process group", run_id,
	    CANCEL_GRACE);
}

void
serve_run_reap(void)
{
	pthread_mutex_lock(&run_mutex);
	for (int i = 0; i < MAX_KEEPERS; i++) {
		int ws;
		if (keepers[i] > 0 && waitpid(keepers[i], &ws, WNOHANG) == keepers[i])
			keepers[i] = 0;
	}
	pthread_mutex_unlock(&run_mutex);
}

/* The ids of the state directory's runs, newest first (ids start with the UTC time), malloc'd. */
static char **
run_ids(int only_active)
{
	char *runs = dm_xasprintf("%s/runs", serve.state_dir);
	DIR *d = opendir(runs);
	char **v = NULL;
	size_t n = 0;
	struct dirent *de;

	free(runs);
	if (d != NULL) {
		while ((de = readdir(d)) != NULL) {
			if (de->d_name[0] == '.' || !serve_run_id_ok(de->d_name))
				continue;
			if (only_active) {
				char *e = serve_run_path(de->d_name, "exit");
				int ended = access(e, F_OK) == 0;
				free(e);
				if (ended || !run_exists(de->d_name) || !run_keeper_pid(de->d_name))
					continue;
				run_cancel_escalate(de->d_name);
			}
			v = dm_xrealloc(v, (n + 2) * sizeof *v);
			v[n++] = dm_xstrdup(de->d_name);
		}
		closedir(d);
	}
	if (v == NULL)
		v = dm_xcalloc(1, sizeof *v);
	v[n] = NULL;
	/* newest first */
	for (size_t i = 1; i < n; i++) {
		char *x = v[i];
		size_t j = i;
		for (; j > 0 && strcmp(v[j - 1], x) < 0; j--)
			v[j] = v[j - 1];
		v[j] = x;
	}
	return v;
}

char **
serve_run_active(void)
{
	return run_ids(1);
}

/*
 * A run that ended changed the destination: the cached baselines and plans no
 * longer hold. Whoever first sees its exit status (a GET of the run, the event
 * thread) forgets them, before anyone can be told the run ended, so that a
 * client that saw "succeeded" never gets the report of before. Each end once:
 * the newest exit seen is remembered.
 */
static void
run_reports_stale(const char *run_id)
{
	static struct timespec seen;
	struct stat sb;
	char *path = serve_run_path(run_id, "exit");
	int newer = 0;

	if (stat(path, &sb) == 0) {
		pthread_mutex_lock(&run_mutex);
		newer = sb.st_mtim.tv_sec > seen.tv_sec ||
		    (sb.st_mtim.tv_sec == seen.tv_sec && sb.st_mtim.tv_nsec > seen.tv_nsec);
		if (newer)
			seen = sb.st_mtim;
		pthread_mutex_unlock(&run_mutex);
	}
	free(path);
	if (newer) {
		serve_cache_forget("baseline");
		serve_cache_forget("plan");
	}
}

/* An entity's state in a run, from its dm.run row. */
static const char *
run_entity_state(const json_t *row, int run_running)
{
	const char *outcome = json_string_value(json_object_get(row, "outcome"));
	if (outcome == NULL)
		return "unknown";
	if (strcmp(outcome, "running") == 0) {
		if (json_is_true(json_object_get(row, "live")) || run_running)
			return "running";
		return "interrupted";
	}
	return outcome;
}

json_t *
serve_run_get(const char *run_id)
{
	json_t *rows = NULL, *out = NULL, *req = NULL;
	int api, st, running = 0, cancelled;

	if (!serve_run_id_ok(run_id))
		return NULL;
	api = run_exists(run_id);
	PGconn *conn = serve_db_lock();
	if (conn != NULL) {
		int failed = dmpg_begin(conn, "", NULL) < 0;
		if (!failed)
			rows = dmreport_run(conn, run_id);
		failed = failed || rows == NULL || dmpg_commit(conn) < 0;
		serve_db_unlock(conn, failed);
	}
	if (rows == NULL && !api)
		return NULL;	/* unknown, or the destination is down and this server did not start it */
	if (!api && !json_is_array(rows)) {
		json_decref(rows);
		return NULL;
	}
	out = json_object();
	json_object_set_new(out, "id", json_string(run_id));
	json_object_set_new(out, "origin", json_string(api ? "api" : "cli"));
	const char *state;
	if (api) {
		char *r = run_read_file(run_id, "request.json");
		req = r ? json_loads(r, 0, NULL) : NULL;
		free(r);
		st = run_exit_status(run_id);
		if (st >= 0)
			run_reports_stale(run_id);
		cancelled = 0;
		char *cp = serve_run_path(run_id, "cancelled");
		cancelled = access(cp, F_OK) == 0;
		free(cp);
		if (st < 0 && run_keeper_pid(run_id)) {
			state = "running";
			running = 1;
		} else if (st == 0) {
			state = "succeeded";
		} else if (cancelled) {
			state = "cancelled";
		} else {
			state = "failed";
		}
		json_object_set_new(out, "exit_status", st >= 0 ? json_integer(st) : json_null());
	} else {
		/* A run of dm-migrate on some shell: its rows tell. */
		size_t i;
		json_t *row;
		int live = 0, all_ok = 1, any_running = 0;
		json_array_foreach(rows, i, row) {
			const char *o = json_string_value(json_object_get(row, "outcome"));
			live |= json_is_true(json_object_get(row, "live"));
			all_ok &= o != NULL && strcmp(o, "ok") == 0;
			any_running |= o != NULL && strcmp(o, "running") == 0;
		}
		state = live ? "running" : all_ok ? "succeeded" : any_running ? "interrupted" : "failed";
		running = live;
		json_object_set_new(out, "exit_status", json_null());
	}
	json_object_set_new(out, "state", json_string(state));
	json_object_set_new(out, "request", req != NULL ? req : json_null());
	const char *started = req ? json_string_value(json_object_get(req, "started_at")) : NULL;

	/* Per entity: its dm.run row, live progress from the log, and the entities asked for that have none yet. */
	json_t *ents = json_array();
	json_t *progress = serve_events_progress(run_id);
	json_t *summaries = api ? run_log_summaries(run_id) : json_object();
	long long tot[5] = { 0 };
	static const char *const totk[5] = { "inserted", "updated", "deleted", "unchanged", "rejected" };
	size_t i;
	json_t *row;
	const char *first = NULL, *last_fin = NULL;
	json_array_foreach(rows, i, row) {
		json_t *e = json_object();
		const char *name = json_string_value(json_object_get(row, "entity"));
		json_object_set(e, "entity", json_object_get(row, "entity"));
		json_object_set_new(e, "state", json_string(run_entity_state(row, running)));
		static const char *const keys[] = { "inserted", "updated", "deleted", "unchanged", "rejected", "batches",
			"started_at", "finished_at", "progress_at", "seconds", "rows_per_second", "error", NULL };
		for (int k = 0; keys[k] != NULL; k++)
			json_object_set(e, keys[k], json_object_get(row, keys[k]));
		json_t *p = name ? json_object_get(progress, name) : NULL;
		json_object_set(e, "progress", p != NULL && running ? p : json_null());
		json_t *sum = name ? json_object_get(summaries, name) : NULL;
		if (sum != NULL) {
			/* The driver's view: unchanged rows counted, the pipeline timed. */
			json_t *u = json_object_get(sum, "unchanged");
			if (json_is_integer(u))
				json_object_set(e, "unchanged", u);
			json_t *secs = json_object_get(sum, "seconds");
			if (json_is_string(secs))
				json_object_set_new(e, "seconds", json_real(strtod(json_string_value(secs), NULL)));
			json_t *rps = json_object_get(sum, "rows_per_s");
			if (json_is_integer(rps))
				json_object_set(e, "rows_per_second", rps);
		}
		json_array_append_new(ents, e);
		for (int k = 0; k < 5; k++)
			tot[k] += json_integer_value(json_object_get(e, totk[k]));
		const char *s = json_string_value(json_object_get(row, "started_at"));
		const char *f = json_string_value(json_object_get(row, "finished_at"));
		if (s != NULL && (first == NULL || strcmp(s, first) < 0))
			first = s;
		if (f != NULL && (last_fin == NULL || strcmp(f, last_fin) > 0))
			last_fin = f;
	}
	json_t *asked = req ? json_object_get(req, "entities") : NULL;
	json_t *a;
	json_array_foreach(asked, i, a) {
		int seen = 0;
		size_t j;
		json_t *e;
		json_array_foreach(ents, j, e) seen |= json_equal(json_object_get(e, "entity"), a);
		if (seen)
			continue;
		json_t *pe = json_object();
		json_object_set(pe, "entity", a);
		json_object_set_new(pe, "state", json_string(running ? "pending" : "not run"));
		json_t *p = json_object_get(progress, json_string_value(a));
		json_object_set(pe, "progress", p != NULL && running ? p : json_null());
		json_array_append_new(ents, pe);
	}
	json_object_set_new(out, "started_at", json_string(started ? started : first ? first : ""));
	if (running)
		json_object_set_new(out, "finished_at", json_null());
	else if (api) {
		struct stat sb;
		char *ep = serve_run_path(run_id, "exit");
		char fin[40] = "";
		if (stat(ep, &sb) == 0) {
			struct tm tm;
			gmtime_r(&sb.st_mtime, &tm);
			strftime(fin, sizeof fin, "%Y-%m-%d %H:%M:%S+00", &tm);
		}
		free(ep);
		json_object_set_new(out, "finished_at", *fin ? json_string(fin) : last_fin ? json_string(last_fin) : json_null());
	} else
		json_object_set_new(out, "finished_at", last_fin ? json_string(last_fin) : json_null());
	json_object_set_new(out, "entity_count", json_integer((json_int_t)json_array_size(ents)));
	for (int k = 0; k < 5; k++)
		json_object_set_new(out, totk[k], json_integer(tot[k]));
	/* The run's time: its run_done event says; else from its start to its end, or now. */
	json_t *rd = json_object_get(summaries, RUN_DONE_KEY);
	double secs = -1;
	if (rd != NULL && json_is_string(json_object_get(rd, "seconds")))
		secs = strtod(json_string_value(json_object_get(rd, "seconds")), NULL);
	else {
		double t0 = dmreport_epoch(json_string_value(json_object_get(out, "started_at")));
		double b = running ? (double)time(NULL) : dmreport_epoch(json_string_value(json_object_get(out, "finished_at")));
		if (t0 >= 0 && b >= t0)
			secs = b - t0;
	}
	long long moved = tot[0] + tot[1] + tot[2] + tot[3];
	json_object_set_new(out, "seconds", secs >= 0 ? json_real(secs) : json_null());
	json_object_set_new(out, "rows_per_second", secs > 0 ? json_integer((json_int_t)(moved / secs + 0.5)) : json_null());
	char *err = NULL;
	if (api && strcmp(state, "failed") == 0) {
		err = run_log_errors(run_id, 5, 0);
		if (err == NULL && json_is_null(json_object_get(out, "exit_status")))
			err = dm_xstrdup("the run ended without recording its exit status (its keeper was killed)");
	}
	json_object_set_new(out, "error", err ? json_string(err) : json_null());
	free(err);
	json_object_set_new(out, "entities", ents);
	json_decref(progress);
	json_decref(summaries);
	json_decref(rows);
	return out;
}

/* A summary of a run for the history: the run object without its per-entity details. */
static json_t *
run_summary(const char *run_id)
{
	json_t *r = serve_run_get(run_id);
	if (r == NULL)
		return NULL;
	json_object_del(r, "entities");
	json_object_del(r, "request");
	return r;
}

json_t *
serve_run_list(int limit, const char *before)
{
	json_t *db = NULL, *out = json_array(), *page;
	char **api = run_ids(0);
	size_t i, ndb = 0;
	json_t *row;

	PGconn *conn = serve_db_lock();
	if (conn != NULL) {
		int failed = dmpg_begin(conn, "", NULL) < 0;
		if (!failed)
			db = dmreport_runs(conn, 1000, NULL);
		failed = failed || db == NULL || dmpg_commit(conn) < 0;
		serve_db_unlock(conn, failed);
	}
	ndb = json_array_size(db);
	/* Merge: the ids of both, newest first by start time, then id. */
	struct item {
		const char *id;
		const char *started;
	} *items = dm_xcalloc(ndb + 1 + 1024, sizeof *items);
	size_t n = 0;
	json_array_foreach(db, i, row) {
		items[n].id = json_string_value(json_object_get(row, "run"));
		items[n].started = json_string_value(json_object_get(row, "started_at"));
		if (items[n].id != NULL && items[n].started != NULL)
			n++;
	}
	json_t *reqs = json_array();
	for (char **p = api; *p != NULL && n < ndb + 1024; p++) {
		int dup = 0;
		for (size_t k = 0; k < ndb && !dup; k++)
			dup = strcmp(items[k].id, *p) == 0;
		if (dup)
			continue;
		char *r = run_read_file(*p, "request.json");
		json_t *req = r ? json_loads(r, 0, NULL) : NULL;
		free(r);
		if (req == NULL)
			continue;
		json_array_append_new(reqs, req);
		items[n].id = *p;
		items[n].started = json_string_value(json_object_get(req, "started_at"));
		if (items[n].started == NULL)
			items[n].started = "";
		n++;
	}
	for (size_t a = 1; a < n; a++) {
		struct item x = items[a];
		size_t b = a;
		for (; b > 0; b--) {
			int c = strncmp(items[b - 1].started, x.started, 19);
			if (c > 0 || (c == 0 && strcmp(items[b - 1].id, x.id) > 0))
				break;
			items[b] = items[b - 1];
		}
		items[b] = x;
	}
	size_t from = 0;
	if (before != NULL) {
		from = n;
		for (size_t k = 0; k < n; k++)
			if (strcmp(items[k].id, before) == 0) {
				from = k + 1;
				break;
			}
	}
	for (size_t k = from; k < n && json_array_size(out) < (size_t)limit; k++) {
		json_t *s = run_summary(items[k].id);
		if (s != NULL)
			json_array_append_new(out, s);
	}
	page = json_object();
	json_object_set_new(page, "runs", out);
	size_t got = json_array_size(out);
	const char *next = got > 0 && from + got < n ? json_string_value(json_object_get(json_array_get(out, got - 1), "id")) : NULL;
	json_object_set_new(page, "next", next ? json_string(next) : json_null());
	free(items);
	json_decref(reqs);
	json_decref(db);
	serve_strv_free(api);
	return page;
}

int
serve_run_cancel(const char *run_id)
{
	if (!serve_run_id_ok(run_id))
		return 404;
	if (!run_exists(run_id)) {
		json_t *r = serve_run_get(run_id);
		int known = r != NULL;
		json_decref(r);
		/* A run started on some shell is not this server's to stop. */
		return known ? 409 : 404;
	}
	pid_t keeper;
	if (run_exit_status(run_id) >= 0 || (keeper = run_keeper_pid(run_id)) == 0)
		return 409;
	run_write_file(run_id, "cancelled", "");
	kill(-keeper, SIGTERM);	/* the run's group: dm-migrate and its programs; the keeper ignores it */
	serve_log("info", "run_cancel", "run %s: cancel asked (TERM to its process group %ld)", run_id, (long)keeper);
	return 0;
}
