// SPDX-License-Identifier: GPL-2.0
/*
 * racer - one role of a module-unload race, in a tight loop of raw syscalls.
 *
 * One SSH exec per operation is far too slow to hit a race window, so each
 * role runs here, inside the guest, starts at a shared barrier, stops at a
 * deadline or an operation count, and prints one JSON object: per operation
 * the count, successes, failures by errno name and latency percentiles.
 *
 * Roles: unloader looker mounter fsmounter holder loader (see usage()).
 * Built static on the host; no libc wrappers exist for the module syscalls.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_OPS		4
#define MAX_ERRNO	256
#define MAX_SAMPLES	(4u << 20)

struct shared {
	int arrived;		/* barrier: roles that have arrived */
	int unloading;		/* the unloader is between delete and reload */
	uint64_t generation;	/* completed unload/reload cycles */
};

struct op_stats {
	const char *name;
	uint64_t total, ok, during_unload;
	uint64_t errs[MAX_ERRNO + 1];
	uint64_t *samples;	/* latencies in ns, up to MAX_SAMPLES */
	uint64_t nsamples, cap, max_ns;
	uint64_t first_failure_ns;	/* since the start, 0 = none */
};

static struct {
	const char *role, *name, *ctl, *dir, *fstype, *data, *ko, *params;
	const char *barrier, *load;
	long duration_ms, count, pause_us, jitter_us, hold_us, parties;
	long check_result, bus, progress;
	unsigned int seed;
	int unload;
} opt = {
	.params = "", .load = "finit", .duration_ms = 10000, .count = -1,
	.check_result = -1, .bus = -1, .parties = 1, .seed = 1,
};

static volatile sig_atomic_t stop;
static struct shared *shm;
static struct shared local_shm;
static struct op_stats ops[MAX_OPS];
static int nops;
static uint64_t iterations;
static uint64_t start_ns;

static const char *const errno_names[MAX_ERRNO + 1] = {
	[EPERM] = "EPERM", [ENOENT] = "ENOENT", [ESRCH] = "ESRCH", [EINTR] = "EINTR",
	[EIO] = "EIO", [ENXIO] = "ENXIO", [E2BIG] = "E2BIG", [ENOEXEC] = "ENOEXEC",
	[EBADF] = "EBADF", [ECHILD] = "ECHILD", [EAGAIN] = "EAGAIN", [ENOMEM] = "ENOMEM",
	[EACCES] = "EACCES", [EFAULT] = "EFAULT", [ENOTBLK] = "ENOTBLK", [EBUSY] = "EBUSY",
	[EEXIST] = "EEXIST", [EXDEV] = "EXDEV", [ENODEV] = "ENODEV", [ENOTDIR] = "ENOTDIR",
	[EISDIR] = "EISDIR", [EINVAL] = "EINVAL", [ENFILE] = "ENFILE", [EMFILE] = "EMFILE",
	[ENOTTY] = "ENOTTY", [EFBIG] = "EFBIG", [ENOSPC] = "ENOSPC", [EROFS] = "EROFS",
	[ERANGE] = "ERANGE", [EDEADLK] = "EDEADLK", [ENAMETOOLONG] = "ENAMETOOLONG",
	[ENOSYS] = "ENOSYS", [ENOTEMPTY] = "ENOTEMPTY", [ELOOP] = "ELOOP",
	[ENODATA] = "ENODATA", [ETIMEDOUT] = "ETIMEDOUT", [ECANCELED] = "ECANCELED",
	[ENOKEY] = "ENOKEY", [EKEYREJECTED] = "EKEYREJECTED", [ENOTCONN] = "ENOTCONN",
	[EOPNOTSUPP] = "EOPNOTSUPP",
};

/* Pseudo-errno for an op that "succeeded" with the wrong result. */
#define EWRONGRESULT	MAX_ERRNO

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void die_usage(const char *msg)
{
	fprintf(stderr, "racer: %s\n", msg);
	fprintf(stderr,
		"usage: racer ROLE --name NAME [options]\n"
		"roles: unloader looker mounter fsmounter holder loader\n"
		"  --ctl PATH --dir DIR --fstype T --data S --ko PATH --params S\n"
		"  --load finit|modprobe --unload --bus N --check-result N\n"
		"  --duration-ms N --count N --pause-us N --jitter-us N --hold-us N\n"
		"  --barrier PATH --parties N --seed N --progress\n");
	exit(2);
}

static struct op_stats *op_new(const char *name)
{
	struct op_stats *op = &ops[nops++];

	op->name = name;
	return op;
}

static void op_record(struct op_stats *op, uint64_t t0, int err)
{
	uint64_t dt = now_ns() - t0;

	op->total++;
	if (!err) {
		op->ok++;
	} else {
		if (!op->first_failure_ns)
			op->first_failure_ns = now_ns() - start_ns;
		op->errs[err > 0 && err <= MAX_ERRNO ? err : 0]++;
		if (__atomic_load_n(&shm->unloading, __ATOMIC_RELAXED))
			op->during_unload++;
	}
	if (dt > op->max_ns)
		op->max_ns = dt;
	if (op->nsamples == op->cap && op->cap < MAX_SAMPLES) {
		uint64_t cap = op->cap ? op->cap * 2 : 4096;
		uint64_t *s = realloc(op->samples, cap * sizeof(*s));

		if (s) {
			op->samples = s;
			op->cap = cap;
		}
	}
	if (op->nsamples < op->cap)
		op->samples[op->nsamples++] = dt;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile in microseconds over the sorted samples. */
static double pct_us(const struct op_stats *op, double p)
{
	uint64_t rank;

	if (!op->nsamples)
		return 0;
	rank = (uint64_t)(p / 100.0 * op->nsamples + 0.999999);
	if (rank < 1)
		rank = 1;
	if (rank > op->nsamples)
		rank = op->nsamples;
	return op->samples[rank - 1] / 1000.0;
}

static void print_json(long elapsed_ms, const char *error)
{
	int i, e;

	printf("{\"role\":\"%s\",\"name\":\"%s\",\"duration_ms\":%ld,\"iterations\":%llu,"
	       "\"unload_generation\":%llu,\"ops\":{",
	       opt.role, opt.name ? opt.name : "", elapsed_ms, (unsigned long long)iterations,
	       (unsigned long long)__atomic_load_n(&shm->generation, __ATOMIC_RELAXED));
	for (i = 0; i < nops; i++) {
		struct op_stats *op = &ops[i];
		int first = 1;

		qsort(op->samples, op->nsamples, sizeof(*op->samples), cmp_u64);
		printf("%s\"%s\":{\"total\":%llu,\"ok\":%llu,\"errors\":{", i ? "," : "", op->name,
		       (unsigned long long)op->total, (unsigned long long)op->ok);
		for (e = 0; e <= MAX_ERRNO; e++) {
			if (!op->errs[e])
				continue;
			if (e == EWRONGRESULT)
				printf("%s\"EWRONGRESULT\":%llu", first ? "" : ",",
				       (unsigned long long)op->errs[e]);
			else if (e < MAX_ERRNO && errno_names[e])
				printf("%s\"%s\":%llu", first ? "" : ",", errno_names[e],
				       (unsigned long long)op->errs[e]);
			else
				printf("%s\"E%d\":%llu", first ? "" : ",", e,
				       (unsigned long long)op->errs[e]);
			first = 0;
		}
		printf("},\"failed_during_unload\":%llu,\"latency_us\":{\"p50\":%.1f,\"p90\":%.1f,"
		       "\"p99\":%.1f,\"max\":%.1f},\"samples\":%llu,\"first_failure_ms\":",
		       (unsigned long long)op->during_unload, pct_us(op, 50), pct_us(op, 90),
		       pct_us(op, 99), op->max_ns / 1000.0, (unsigned long long)op->nsamples);
		if (op->first_failure_ns)
			printf("%.1f}", op->first_failure_ns / 1e6);
		else
			printf("null}");
	}
	printf("}");
	if (error)
		printf(",\"error\":\"%s\"", error);
	printf("}\n");
	fflush(stdout);
}

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

/* All roles start together: arrive, then wait for the others (30 s at most). */
static int barrier_wait(void)
{
	uint64_t deadline = now_ns() + 30000000000ull;
	int fd;

	if (!opt.barrier) {
		shm = &local_shm;
		return 0;
	}
	fd = open(opt.barrier, O_RDWR | O_CREAT, 0600);
	if (fd < 0 || ftruncate(fd, 4096) < 0)
		return -1;
	shm = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (shm == MAP_FAILED) {
		shm = &local_shm;
		return -1;
	}
	__atomic_add_fetch(&shm->arrived, 1, __ATOMIC_SEQ_CST);
	while (__atomic_load_n(&shm->arrived, __ATOMIC_SEQ_CST) < opt.parties) {
		if (now_ns() > deadline || stop)
			return -2;
		usleep(100);
	}
	return 0;
}

static long sys_finit_module(int fd, const char *params)
{
	return syscall(SYS_finit_module, fd, params, 0);
}

static long sys_delete_module(const char *name)
{
	return syscall(SYS_delete_module, name, O_NONBLOCK);
}

static int run_modprobe(const char *name)
{
	int status;
	pid_t pid = fork();

	if (pid == 0) {
		char *argv[] = { "/sbin/modprobe", "-q", (char *)name, NULL };
		char *envp[] = { "PATH=/sbin:/bin", NULL };

		execve(argv[0], argv, envp);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &status, 0) < 0)
		return errno;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : EBUSY;
}

static int load_once(int ko_fd)
{
	if (strcmp(opt.load, "modprobe") == 0)
		return run_modprobe(opt.name);
	return sys_finit_module(ko_fd, opt.params) ? errno : 0;
}

static void pause_between(void)
{
	long us = opt.pause_us;

	if (opt.jitter_us > 0)
		us += random() % (opt.jitter_us + 1);
	if (us > 0)
		usleep(us);
}

static int open_ko(void)
{
	int fd;

	if (strcmp(opt.load, "finit") != 0)
		return -1;
	if (!opt.ko)
		die_usage("--ko is needed to load with finit_module");
	fd = open(opt.ko, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		perror(opt.ko);
		exit(2);
	}
	return fd;
}

/* --- roles: each does one iteration per call --- */

static struct op_stats *op_a, *op_b;
static int role_fd = -1;
static char cmd[256], cmd2[256];

/*
 * Unload, then load again.  An unload refused because the module is in use
 * (EAGAIN/EBUSY) is retried at once; the pause (--pause-us) only follows a
 * completed cycle, so the reloaded module stays live for a while, like an
 * idle module that gets unloaded automatically.
 */
static int unloader_step(void)
{
	uint64_t t0;
	int err;

	__atomic_store_n(&shm->unloading, 1, __ATOMIC_SEQ_CST);
	t0 = now_ns();
	err = sys_delete_module(opt.name) ? errno : 0;
	op_record(op_a, t0, err);
	if (!err || err == ENOENT) {
		t0 = now_ns();
		op_record(op_b, t0, load_once(role_fd));
	}
	__atomic_store_n(&shm->unloading, 0, __ATOMIC_SEQ_CST);
	if (err == EAGAIN || err == EBUSY)
		return 0;
	__atomic_add_fetch(&shm->generation, 1, __ATOMIC_SEQ_CST);
	return 1;
}

static int looker_step(void)
{
	size_t len = strlen(cmd);
	uint64_t t0 = now_ns();
	ssize_t n = write(role_fd, cmd, len);
	int err = n == (ssize_t)len ? 0 : (n < 0 ? errno : EIO);

	if (!err && opt.check_result >= 0) {
		char buf[32] = "";

		if (pread(role_fd, buf, sizeof(buf) - 1, 0) <= 0 ||
		    strtol(buf, NULL, 10) != opt.check_result)
			err = EWRONGRESULT;
	}
	op_record(op_a, t0, err);
	return 1;
}

static int mounter_step(void)
{
	uint64_t t0 = now_ns();
	int err = mount("none", opt.dir, opt.fstype, 0, opt.data) ? errno : 0;

	op_record(op_a, t0, err);
	if (!err) {
		t0 = now_ns();
		op_record(op_b, t0, umount2(opt.dir, 0) ? errno : 0);
	}
	return 1;
}

static int holder_step(void)
{
	uint64_t t0 = now_ns();
	int fd = open(opt.ctl, O_RDWR | O_CLOEXEC);
	int err = fd < 0 ? errno : 0;

	if (!err && write(fd, cmd, strlen(cmd)) < 0)
		err = errno;
	op_record(op_a, t0, err);
	if (!err) {
		if (opt.hold_us > 0)
			usleep(opt.hold_us);
		t0 = now_ns();
		op_record(op_b, t0, write(fd, cmd2, strlen(cmd2)) < 0 ? errno : 0);
	}
	if (fd >= 0)
		close(fd);
	return 1;
}

static int loader_step(void)
{
	uint64_t t0 = now_ns();
	int err = load_once(role_fd);

	op_record(op_a, t0, err);
	if (!err && opt.unload) {
		t0 = now_ns();
		op_record(op_b, t0, sys_delete_module(opt.name) ? errno : 0);
	}
	return 1;
}

static int (*setup_role(void))(void)
{
	const char *r = opt.role;

	if (!opt.name)
		die_usage("--name is required");
	if (strcmp(r, "unloader") == 0) {
		op_a = op_new("delete_module");
		op_b = op_new("load");
		role_fd = open_ko();
		return unloader_step;
	}
	if (strcmp(r, "loader") == 0) {
		op_a = op_new("load");
		op_b = op_new("delete_module");
		role_fd = open_ko();
		return loader_step;
	}
	if (strcmp(r, "looker") == 0 || strcmp(r, "holder") == 0) {
		int is_looker = r[0] == 'l';

		if (!opt.ctl)
			die_usage("--ctl is required");
		if (opt.bus >= 0)
			snprintf(cmd, sizeof(cmd), "%s %s %ld", is_looker ? "lookup-call" : "hold",
				 opt.name, opt.bus);
		else
			snprintf(cmd, sizeof(cmd), "%s %s", is_looker ? "lookup-call" : "hold",
				 opt.name);
		snprintf(cmd2, sizeof(cmd2), "release");
		if (!is_looker) {
			op_a = op_new("hold");
			op_b = op_new("release");
			return holder_step;
		}
		op_a = op_new("lookup");
		role_fd = open(opt.ctl, O_RDWR | O_CLOEXEC);
		if (role_fd < 0) {
			shm = &local_shm;
			print_json(0, "cannot open the control device");
			exit(1);
		}
		return looker_step;
	}
	if (strcmp(r, "mounter") == 0 || strcmp(r, "fsmounter") == 0) {
		static char data[300];

		if (!opt.dir || !opt.fstype)
			die_usage("--dir and --fstype are required");
		if (!opt.data && strcmp(r, "mounter") == 0) {
			snprintf(data, sizeof(data), "backend=%s", opt.name);
			opt.data = data;
		}
		op_a = op_new("mount");
		op_b = op_new("umount");
		return mounter_step;
	}
	die_usage("unknown role");
	return NULL;
}

static void parse_args(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "name", 1, 0, 'n' }, { "ctl", 1, 0, 'c' }, { "dir", 1, 0, 'd' },
		{ "fstype", 1, 0, 't' }, { "data", 1, 0, 'o' }, { "ko", 1, 0, 'k' },
		{ "params", 1, 0, 'P' }, { "load", 1, 0, 'l' }, { "unload", 0, 0, 'u' },
		{ "bus", 1, 0, 'b' }, { "check-result", 1, 0, 'r' },
		{ "duration-ms", 1, 0, 'D' }, { "count", 1, 0, 'N' },
		{ "pause-us", 1, 0, 'p' }, { "jitter-us", 1, 0, 'j' },
		{ "hold-us", 1, 0, 'h' }, { "barrier", 1, 0, 'B' },
		{ "parties", 1, 0, 'a' }, { "seed", 1, 0, 's' }, { "progress", 0, 0, 'g' },
		{ 0, 0, 0, 0 }
	};
	char *end;
	int c;

	if (argc < 2 || argv[1][0] == '-')
		die_usage("a role comes first");
	opt.role = argv[1];
	opterr = 0;
	optind = 2;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		long v = optarg ? strtol(optarg, &end, 10) : 0;
		int numeric = strchr("bDNpjharsr", c) != NULL;

		if (numeric && (!*optarg || *end || v < -1))
			die_usage("a numeric option has a bad value");
		switch (c) {
		case 'n': opt.name = optarg; break;
		case 'c': opt.ctl = optarg; break;
		case 'd': opt.dir = optarg; break;
		case 't': opt.fstype = optarg; break;
		case 'o': opt.data = optarg; break;
		case 'k': opt.ko = optarg; break;
		case 'P': opt.params = optarg; break;
		case 'l': opt.load = optarg; break;
		case 'u': opt.unload = 1; break;
		case 'b': opt.bus = v; break;
		case 'r': opt.check_result = v; break;
		case 'D': opt.duration_ms = v; break;
		case 'N': opt.count = v; break;
		case 'p': opt.pause_us = v; break;
		case 'j': opt.jitter_us = v; break;
		case 'h': opt.hold_us = v; break;
		case 'B': opt.barrier = optarg; break;
		case 'a': opt.parties = v; break;
		case 's': opt.seed = (unsigned int)v; break;
		case 'g': opt.progress = 1; break;
		default: die_usage("unknown option");
		}
	}
	if (optind != argc)
		die_usage("unexpected argument");
	if (strcmp(opt.load, "finit") && strcmp(opt.load, "modprobe"))
		die_usage("--load is finit or modprobe");
}

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_signal };
	int (*step)(void);
	uint64_t start, deadline, next_progress;
	int rc;

	parse_args(argc, argv);
	step = setup_role();
	srandom(opt.seed);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	rc = barrier_wait();
	if (rc) {
		print_json(0, rc == -2 ? "barrier timeout" : "cannot map the barrier file");
		return 3;
	}
	start = now_ns();
	start_ns = start;
	deadline = start + (uint64_t)opt.duration_ms * 1000000ull;
	next_progress = start + 1000000000ull;
	while (!stop && now_ns() < deadline &&
	       (opt.count < 0 || iterations < (uint64_t)opt.count)) {
		int full = step();

		iterations++;
		if (opt.progress && now_ns() >= next_progress) {
			fprintf(stderr, "progress %llu\n", (unsigned long long)iterations);
			next_progress += 1000000000ull;
		}
		if (full)
			pause_between();
	}
	print_json((long)((now_ns() - start) / 1000000), NULL);
	return 0;
}
