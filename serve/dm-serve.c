/*
 * dm-serve - the service face of dm: a REST API, Prometheus metrics and a
 * dashboard over the same programs and the same dm schema as dm-migrate (see
 * dm-serve(1)). A run started over HTTP is a `dm-migrate run`.
 */
#define _GNU_SOURCE
#include "serve.h"

#include <microhttpd.h>

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct serve_settings serve;

static const char usage_text[] =
    "usage: dm-serve [-c SPEC] [--listen ADDR:PORT|PATH] [--state-dir DIR] [--tls-cert FILE --tls-key FILE]\n"
    "                [--cache-seconds N] [--baseline-interval N] [--max-event-clients N] [-q] [-v]\n"
    "       dm-serve --help | --version\n"
    "\n"
    "Serves dm over HTTP: a REST API under /v1 (GET /v1/openapi.json describes it),\n"
    "Prometheus metrics at /metrics and a dashboard at /. Runs it starts are\n"
    "dm-migrate runs in their own process group; they outlive dm-serve, and a\n"
    "restarted dm-serve finds them again.\n"
    "\n"
    "  -c, --spec FILE       the entities of a spec file (dm.conf(5)), as dm-migrate -c\n"
    "  --listen ADDR:PORT    where to listen (default 127.0.0.1:8420); [::1]:PORT for\n"
    "                        IPv6, or the path of a unix socket\n"
    "  --state-dir DIR       the runs' requests, logs and exit statuses (default\n"
    "                        $DM_STATE_DIR, else $XDG_STATE_HOME/dm-serve, else\n"
    "                        ~/.local/state/dm-serve)\n"
    "  --tls-cert FILE, --tls-key FILE  serve HTTPS with this PEM certificate and key\n"
    "  --cache-seconds N     keep entities, baseline and plan reports N seconds\n"
    "                        (default 30)\n"
    "  --baseline-interval N count the rows of both sides every N seconds, for\n"
    "                        /metrics and GET /v1/baseline (default 300; 0: only\n"
    "                        when GET /v1/baseline asks)\n"
    "  --max-event-clients N at most N clients of /v1/events at once (default 64)\n"
    "  -q, -v                fewer, more messages on stderr\n"
    "\n"
    "Environment: DM_SOURCE, DM_DEST (connection strings), DM_API_TOKEN (the bearer\n"
    "token; when unset, dm-serve makes one and prints the dashboard's address with it).\n"
    "Exit status: 0 after SIGTERM or SIGINT, 1 failure, 2 usage.\n";

static void
usage(void)
{
	fputs("usage: dm-serve [-c SPEC] [--listen ADDR:PORT|PATH] [--state-dir DIR] [--tls-cert FILE --tls-key FILE]"
	    " [--cache-seconds N] [--baseline-interval N] [--max-event-clients N] [-q] [-v]\n", stderr);
	exit(DM_EXIT_USAGE);
}

static pthread_mutex_t log_mutex = PTHREAD_MUTEX_INITIALIZER;

/* One logfmt event on stderr: ts, level, event, msg. */
void
serve_log(const char *level, const char *event, const char *fmt, ...)
{
	char msg[2048], ts[40];
	struct timespec now;
	struct tm tm;
	va_list ap;

	if (dm_verbosity < 1 && strcmp(level, "error") != 0)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
	dm_buf b = { 0 };
	char *head = dm_xasprintf("ts=%s.%03ldZ level=%s event=%s msg=\"", ts, now.tv_nsec / 1000000, level, event);
	dm_buf_append(&b, head, strlen(head));
	free(head);
	for (const char *p = msg; *p; p++) {
		if (*p == '"' || *p == '\\')
			dm_buf_putc(&b, '\\');
		dm_buf_putc(&b, *p == '\n' ? ' ' : *p);
	}
	dm_buf_append(&b, "\"\n", 2);
	pthread_mutex_lock(&log_mutex);
	(void)!write(STDERR_FILENO, b.data, b.len);
	pthread_mutex_unlock(&log_mutex);
	dm_buf_free(&b);
}

/* The directory of this executable, malloc'd, or NULL. */
static char *
exe_dir(void)
{
	char path[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
	if (n <= 0)
		return NULL;
	path[n] = '\0';
	char *slash = strrchr(path, '/');
	if (slash == NULL)
		return NULL;
	*slash = '\0';
	return dm_xstrdup(path);
}

/* mkdir -p with mode 0700 for what it makes. 0 or -1. */
static int
make_dirs(const char *path)
{
	char *p = dm_xstrdup(path);
	int rc = 0;
	for (char *s = p + 1; ; s++) {
		if (*s == '/' || *s == '\0') {
			char c = *s;
			*s = '\0';
			if (mkdir(p, 0700) < 0 && errno != EEXIST) {
				dm_err("cannot make the state directory %s: %s", p, strerror(errno));
				rc = -1;
				break;
			}
			*s = c;
			if (c == '\0')
				break;
		}
	}
	free(p);
	return rc;
}

int
main(int argc, char **argv)
{
	const char *listen_addr = "127.0.0.1:8420", *cert = NULL, *key = NULL, *state = NULL;
	char *state_owned = NULL, *spec_abs = NULL, *dir = NULL, *migrate = NULL;
	struct MHD_Daemon *d = NULL;
	int rc = DM_EXIT_FAIL;

	dm_prog = "dm-serve";
	if (argc > 1)
		dm_std_option(argv[1], usage_text);
	serve.cache_seconds = 30;
	serve.max_sse = 64;
	serve.baseline_interval = 300;
	enum { O_LISTEN = 256, O_STATE, O_CERT, O_KEY, O_CACHE, O_MAXSSE, O_BASELINE };
	static const struct option opts[] = {
		{ "spec", required_argument, NULL, 'c' },
		{ "listen", required_argument, NULL, O_LISTEN },
		{ "state-dir", required_argument, NULL, O_STATE },
		{ "tls-cert", required_argument, NULL, O_CERT },
		{ "tls-key", required_argument, NULL, O_KEY },
		{ "cache-seconds", required_argument, NULL, O_CACHE },
		{ "max-event-clients", required_argument, NULL, O_MAXSSE },
		{ "baseline-interval", required_argument, NULL, O_BASELINE },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	int ch;
	while ((ch = getopt_long(argc, argv, "c:qv", opts, NULL)) != -1) {
		char *end;
		switch (ch) {
		case 'c': serve.spec = optarg; break;
		case O_LISTEN: listen_addr = optarg; break;
		case O_STATE: state = optarg; break;
		case O_CERT: cert = optarg; break;
		case O_KEY: key = optarg; break;
		case O_CACHE:
			errno = 0;
			serve.cache_seconds = strtod(optarg, &end);
			if (errno || end == optarg || *end || !(serve.cache_seconds >= 0) || serve.cache_seconds > 86400)
				usage();
			break;
		case O_BASELINE:
			errno = 0;
			serve.baseline_interval = strtod(optarg, &end);
			if (errno || end == optarg || *end || !(serve.baseline_interval >= 0) || serve.baseline_interval > 86400 * 7)
				usage();
			break;
		case O_MAXSSE: {
			errno = 0;
			long v = strtol(optarg, &end, 10);
			if (errno || end == optarg || *end || v < 1 || v > 1000)
				usage();
			serve.max_sse = (int)v;
			break;
		}
		case 'q': dm_verbosity = 0; break;
		case 'v': dm_verbosity = 2; break;
		case 'h': dm_std_option("--help", usage_text); break;
		case 'V': dm_std_option("--version", usage_text); break;
		default: usage();
		}
	}
	if (optind != argc || (cert == NULL) != (key == NULL))
		usage();
	if (serve.spec != NULL) {
		spec_abs = realpath(serve.spec, NULL);
		if (spec_abs == NULL) {
			dm_err("-c %s: %s", serve.spec, strerror(errno));
			return DM_EXIT_USAGE;
		}
		serve.spec = spec_abs;
	}
	if (getenv("DM_SOURCE") == NULL || getenv("DM_DEST") == NULL) {
		dm_err("DM_SOURCE and DM_DEST must hold the connection strings of the source and the destination");
		return DM_EXIT_USAGE;
	}

	/* The token: from the environment, which children do not need; else a new one. */
	const char *tok = getenv("DM_API_TOKEN");
	int made_token = tok == NULL || *tok == '\0';
	if (!made_token) {
		if (strlen(tok) < 16 || strlen(tok) >= sizeof serve.token) {
			dm_err("DM_API_TOKEN must be 16 to 128 characters long");
			return DM_EXIT_USAGE;
		}
		snprintf(serve.token, sizeof serve.token, "%s", tok);
	} else {
		unsigned char raw[24];
		FILE *fp = fopen("/dev/urandom", "re");
		if (fp == NULL || fread(raw, 1, sizeof raw, fp) != sizeof raw) {
			dm_err("cannot read /dev/urandom for a token");
			if (fp != NULL)
				fclose(fp);
			return DM_EXIT_FAIL;
		}
		fclose(fp);
		for (size_t i = 0; i < sizeof raw; i++)
			snprintf(serve.token + 2 * i, 3, "%02x", raw[i]);
	}
	unsetenv("DM_API_TOKEN");

	/* The programs: beside this one first (a build tree, an image), else on PATH. */
	dir = exe_dir();
	if (dir != NULL) {
		const char *path = getenv("PATH");
		char *p = dm_xasprintf("%s%s%s", dir, path ? ":" : "", path ? path : "");
		setenv("PATH", p, 1);
		free(p);
		migrate = dm_xasprintf("%s/dm-migrate", dir);
		if (access(migrate, X_OK) != 0) {
			free(migrate);
			migrate = NULL;
		}
	}
	if (migrate == NULL) {
		const char *path = getenv("PATH");
		char *copy = dm_xstrdup(path ? path : "/usr/local/bin:/usr/bin:/bin"), *save = NULL;
		for (char *s = strtok_r(copy, ":", &save); s != NULL && migrate == NULL; s = strtok_r(NULL, ":", &save)) {
			char *m = dm_xasprintf("%s/dm-migrate", s);
			if (access(m, X_OK) == 0)
				migrate = m;
			else
				free(m);
		}
		free(copy);
	}
	if (migrate == NULL) {
		dm_err("dm-migrate not found beside dm-serve nor on PATH");
		goto out;
	}
	serve.migrate = migrate;

	if (state == NULL)
		state = getenv("DM_STATE_DIR");
	if (state == NULL || *state == '\0') {
		const char *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
		if (xdg != NULL && *xdg == '/')
			state = state_owned = dm_xasprintf("%s/dm-serve", xdg);
		else if (home != NULL && *home == '/')
			state = state_owned = dm_xasprintf("%s/.local/state/dm-serve", home);
		else {
			dm_err("no state directory: give --state-dir or set DM_STATE_DIR");
			rc = DM_EXIT_USAGE;
			goto out;
		}
	}
	if (make_dirs(state) < 0)
		goto out;
	serve.state_dir = state;

	signal(SIGPIPE, SIG_IGN);
	/*
	 * TERM and INT are blocked in every thread (the threads made later inherit the
	 * mask) and taken by sigwait below: a signal sent to the process could
	 * otherwise land in any thread, and main would never hear of it.
	 */
	sigset_t stop_set;
	sigemptyset(&stop_set);
	sigaddset(&stop_set, SIGTERM);
	sigaddset(&stop_set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &stop_set, NULL);

	char bound[200];
	d = serve_http_start(listen_addr, cert, key, bound, sizeof bound);
	if (d == NULL)
		goto out;
	if (serve_events_start() < 0 || serve_baseline_start() < 0)
		goto out;
	const char *scheme = cert != NULL ? "https" : "http";
	if (made_token)
		serve_log("info", "listening", "dm-serve %s on %s; dashboard: %s://%s/#token=%s (DM_API_TOKEN was not set: this token was made for this process)",
		    DM_VERSION, bound, scheme, bound, serve.token);
	else
		serve_log("info", "listening", "dm-serve %s on %s; dashboard: %s://%s/ (token: DM_API_TOKEN)", DM_VERSION,
		    bound, scheme, bound);
	int sig = 0;
	while (sigwait(&stop_set, &sig) != 0)
		;
	serve_log("info", "stopping", "signal %d: stopping; runs in progress go on", sig);
	serve_events_stop();	/* first: the event streams end, so that their connections close */
	MHD_stop_daemon(d);
	d = NULL;
	rc = DM_EXIT_OK;
out:
	if (d != NULL)
		MHD_stop_daemon(d);
	free(state_owned);
	free(spec_abs);
	free(dir);
	free(migrate);
	return rc;
}
