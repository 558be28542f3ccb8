// SPDX-License-Identifier: GPL-2.0
/*
 * racer - one role of a module-unload race, in a tight loop of raw syscalls.
 *
 * One SSH exec per operation is far too slow to hit a race window, so each
 * role runs here, inside the guest, starts at a shared barrier, stops at a
 * deadline or an operation count, and prints one JSON object: per operation
 * the count, successes, failures by errno name and by how many unloads they
 * overlapped (0, 1, 2 or more), latency percentiles and the log-linear
 * latency histogram (so that the host can merge roles exactly).
 *
 * Events for a timeline, bounded and preallocated so that recording them
 * costs a store and no syscall: the unloader's unload windows (delete_module
 * begun, returned, reload done), a caller's failed calls (the first
 * MAX_FAILURES; the count stays exact) and its calls completed per 100 ms.
 * Times are microseconds since the role's start; start_ns (CLOCK_MONOTONIC,
 * one clock for the whole guest) lets the host put roles on one axis.
 *
 * Roles: unloader looker mounter fsmounter holder loader (see usage()).
 * Built static on the host; no libc wrappers exist for the module syscalls.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <linux/futex.h>
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

typedef uint64_t u64;

#define MAX_OPS		4

/* errno slots: real errnos below MAX_ERRNO, then pseudo-errnos */
#define MAX_ERRNO	256
#define EWRONGRESULT	(MAX_ERRNO + 0)	/* op succeeded, --check-result differs */
#define EMODPROBE	(MAX_ERRNO + 1)	/* /sbin/modprobe exited non-zero */
#define ESHORTWRITE	(MAX_ERRNO + 2)	/* write() returned less than the length */
#define EUNKNOWN	(MAX_ERRNO + 3)	/* errno out of range */
#define ERR_SLOTS	(MAX_ERRNO + 4)

/*
 * Log-linear latency histogram in ns: values below 2^SUB_BITS have a bucket
 * each; above, every power of two is split into 2^SUB_BITS buckets, so a
 * bucket is at most 1/128 (0.8 %) of its values wide.  harness/race/racer.py
 * mirrors hist_index()/hist_value() exactly.
 */
#define SUB_BITS	7
#define SUB_COUNT	(1u << SUB_BITS)
#define HIST_BUCKETS	(SUB_COUNT * 40)	/* up to 2^46 ns, about 19 h */

#define BARRIER_TIMEOUT_NS	30000000000ull

#define OUTPUT_FORMAT	2	/* 2: "events" and "hist_failed" */
#define MAX_WINDOWS	20000	/* unload windows kept (a cycle takes >= 2 ms) */
#define MAX_FAILURES	20000	/* failed calls kept */
#define RATE_BIN_NS	100000000ull	/* calls completed per 100 ms */
#define RATE_BINS	36000	/* an hour of them */

struct shared {
	int arrived;		/* barrier: roles that have arrived (futex word) */
	int unloading;		/* the unloader is between delete and reload */
	u64 generation;	/* completed unload/reload cycles */
	unsigned int seq;	/* odd while unloading; bumped at set and clear */
	u64 unloads;		/* UNLOADS_BEGUN per unload begun + unloads in progress */
};

/*
 * shared.unloads packs both counts in one word, so that one load tells how
 * many unloads an operation overlapped: those in progress at its start plus
 * those begun before its end.  A refused delete_module is taken back.
 */
#define UNLOADS_BEGUN	256ull
#define MET_SLOTS	3	/* failures that overlapped 0, 1, 2 or more unloads */

struct op_stats {
	const char *name;
	u64 total, ok, during_unload;
	u64 met_unloads[MET_SLOTS];
	u64 errs[ERR_SLOTS];
	u64 hist[HIST_BUCKETS];
	u64 hist_failed[HIST_BUCKETS];	/* the failed calls alone */
	u64 max_ns;
	u64 first_failure_ns;	/* since the start, 0 = none */
};

struct op_tok {
	u64 t0;
	u64 unloads;
	unsigned int seq;
};

static struct {
	const char *role, *name, *ctl, *dir, *fstype, *data, *ko, *params;
	const char *barrier, *load;
	long duration_ms, count, pause_us, jitter_us, hold_us, parties;
	long check_result, bus;
	unsigned int seed;
	int unload, progress;
} opt = {
	.params = "", .load = "finit", .duration_ms = 10000, .count = -1,
	.check_result = -1, .bus = -1, .parties = 1, .seed = 1,
};

static volatile sig_atomic_t stop;
static struct shared *shm;
static struct shared local_shm;
static struct op_stats ops[MAX_OPS];
static int nops;
static u64 iterations;
static u64 start_ns;

/* The unloader's unload windows, in ns since start_ns. */
static struct unload_window {
	u64 begin, deleted, reloaded;
	int delete_err, load_err;	/* 0 or ENOENT; 0 or the reload's errno */
} windows[MAX_WINDOWS];
static u64 nwindows;		/* exact; only the first MAX_WINDOWS are kept */

/* A caller's one call operation (lookup, mount, hold): failures and rate. */
static struct {
	struct op_stats *op;	/* NULL: this role records no calls */
	struct call_failure {
		u64 t0, t1;	/* ns since start_ns */
		int err;
	} failures[MAX_FAILURES];
	unsigned int done[RATE_BINS], ok[RATE_BINS];
	unsigned int bins;	/* bins up to the last one touched */
} calls;

static const char *const errno_names[MAX_ERRNO] = {
	[EPERM] = "EPERM", [ENOENT] = "ENOENT", [ESRCH] = "ESRCH", [EINTR] = "EINTR",
	[EIO] = "EIO", [ENXIO] = "ENXIO", [E2BIG] = "E2BIG", [ENOEXEC] = "ENOEXEC",
	[EBADF] = "EBADF", [ECHILD] = "ECHILD", [EAGAIN] = "EAGAIN", [ENOMEM] = "ENOMEM",
	[EACCES] = "EACCES", [EFAULT] = "EFAULT", [ENOTBLK] = "ENOTBLK", [EBUSY] = "EBUSY",
	[EEXIST] = "EEXIST", [EXDEV] = "EXDEV", [ENODEV] = "ENODEV", [ENOTDIR] = "ENOTDIR",
	[EISDIR] = "EISDIR", [EINVAL] = "EINVAL", [ENFILE] = "ENFILE", [EMFILE] = "EMFILE",
	[ENOTTY] = "ENOTTY", [EFBIG] = "EFBIG", [ENOSPC] = "ENOSPC", [ESPIPE] = "ESPIPE",
	[EROFS] = "EROFS", [ERANGE] = "ERANGE", [EDEADLK] = "EDEADLK",
	[ENAMETOOLONG] = "ENAMETOOLONG", [ENOSYS] = "ENOSYS", [ENOTEMPTY] = "ENOTEMPTY",
	[ELOOP] = "ELOOP", [ENODATA] = "ENODATA", [EOVERFLOW] = "EOVERFLOW",
	[ETIMEDOUT] = "ETIMEDOUT", [ECANCELED] = "ECANCELED", [ENOKEY] = "ENOKEY",
	[EKEYREJECTED] = "EKEYREJECTED", [ENOTCONN] = "ENOTCONN",
	[EOPNOTSUPP] = "EOPNOTSUPP",
};

static const char *const pseudo_names[ERR_SLOTS - MAX_ERRNO] = {
	"EWRONGRESULT", "EMODPROBE", "ESHORTWRITE", "EUNKNOWN",
};

static u64 now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (u64)ts.tv_sec * 1000000000ull + ts.tv_nsec;
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

/* --- histogram --- */

static unsigned int hist_index(u64 v)
{
	unsigned int shift, idx;

	if (v < SUB_COUNT)
		return v;
	shift = 63 - __builtin_clzll(v) - SUB_BITS;
	idx = (shift + 1) * SUB_COUNT + (unsigned int)((v >> shift) - SUB_COUNT);
	return idx < HIST_BUCKETS ? idx : HIST_BUCKETS - 1;
}

/* The value a bucket stands for: its middle (exact for 1-ns buckets). */
static u64 hist_value(unsigned int idx)
{
	unsigned int shift;
	u64 lo;

	if (idx < SUB_COUNT)
		return idx;
	shift = idx / SUB_COUNT - 1;
	lo = (u64)(SUB_COUNT + idx % SUB_COUNT) << shift;
	return lo + ((1ull << shift) >> 1);
}

/* Nearest rank: the smallest value with at least ceil(n * permille / 1000) below. */
static u64 hist_pct_ns(const struct op_stats *op, u64 permille)
{
	u64 n = op->total, rank, seen = 0, v;
	unsigned int i;

	if (!n)
		return 0;
	rank = (n * permille + 999) / 1000;
	if (rank < 1)
		rank = 1;
	for (i = 0; i < HIST_BUCKETS; i++) {
		seen += op->hist[i];
		if (seen >= rank)
			break;
	}
	v = hist_value(i < HIST_BUCKETS ? i : HIST_BUCKETS - 1);
	return v < op->max_ns ? v : op->max_ns;
}

/* --- operations --- */

static struct op_stats *op_new(const char *name)
{
	struct op_stats *op = &ops[nops++];

	op->name = name;
	return op;
}

static void op_begin(struct op_tok *tok)
{
	tok->seq = __atomic_load_n(&shm->seq, __ATOMIC_SEQ_CST);
	tok->unloads = __atomic_load_n(&shm->unloads, __ATOMIC_SEQ_CST);
	tok->t0 = now_ns();
}

static unsigned int unloads_met(const struct op_tok *tok)
{
	u64 end = __atomic_load_n(&shm->unloads, __ATOMIC_SEQ_CST);
	u64 met = end / UNLOADS_BEGUN - tok->unloads / UNLOADS_BEGUN +
		  tok->unloads % UNLOADS_BEGUN;

	return met < MET_SLOTS ? met : MET_SLOTS - 1;
}

/* Stores into preallocated arrays only: recording must not change the timing. */
static void call_event(const struct op_tok *tok, u64 t1, int err)
{
	u64 bin = (t1 - start_ns) / RATE_BIN_NS;

	if (bin < RATE_BINS) {
		calls.done[bin]++;
		calls.ok[bin] += !err;
		if (bin >= calls.bins)
			calls.bins = bin + 1;
	}
	/* op_end() has counted this call: it is failure number total - ok */
	if (err && calls.op->total - calls.op->ok <= MAX_FAILURES) {
		struct call_failure *f = &calls.failures[calls.op->total - calls.op->ok - 1];

		f->t0 = tok->t0 - start_ns;
		f->t1 = t1 - start_ns;
		f->err = err;
	}
}

/*
 * An op overlapped an unload if the flag was up at its start or moved during
 * it.  Returns the time it ended.
 */
static u64 op_end(struct op_stats *op, const struct op_tok *tok, int err)
{
	u64 t1 = now_ns(), dt = t1 - tok->t0;
	unsigned int idx = hist_index(dt);

	if (err == EINTR && stop)	/* our own SIGTERM, not an outcome */
		return t1;
	if (err < 0 || err >= ERR_SLOTS)
		err = EUNKNOWN;
	op->total++;
	op->hist[idx]++;
	if (dt > op->max_ns)
		op->max_ns = dt;
	if (!err)
		op->ok++;
	if (op == calls.op)
		call_event(tok, t1, err);
	if (!err)
		return t1;
	op->hist_failed[idx]++;
	if (!op->first_failure_ns)
		op->first_failure_ns = t1 - start_ns;
	op->errs[err]++;
	op->met_unloads[unloads_met(tok)]++;
	if ((tok->seq & 1) || __atomic_load_n(&shm->seq, __ATOMIC_SEQ_CST) != tok->seq)
		op->during_unload++;
	return t1;
}

/* --- JSON --- */

static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char c = *s;

		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

/* An errno slot as a JSON string: its name, or E<n> for an unnamed errno. */
static void print_err_name(int e)
{
	if (e >= MAX_ERRNO)
		printf("\"%s\"", pseudo_names[e - MAX_ERRNO]);
	else if (errno_names[e])
		printf("\"%s\"", errno_names[e]);
	else
		printf("\"E%d\"", e);
}

static void print_errors(const struct op_stats *op)
{
	int e, first = 1;

	printf("\"errors\":{");
	for (e = 0; e < ERR_SLOTS; e++) {
		if (!op->errs[e])
			continue;
		printf("%s", first ? "" : ",");
		first = 0;
		print_err_name(e);
		printf(":%llu", (unsigned long long)op->errs[e]);
	}
	printf("}");
}

static void print_hist(const char *key, const u64 *hist)
{
	unsigned int i;
	int first = 1;

	printf("\"%s\":{\"sub_bits\":%d,\"buckets\":[", key, SUB_BITS);
	for (i = 0; i < HIST_BUCKETS; i++) {
		if (!hist[i])
			continue;
		printf("%s[%u,%llu]", first ? "" : ",", i, (unsigned long long)hist[i]);
		first = 0;
	}
	printf("]}");
}

static void print_op(const struct op_stats *op)
{
	json_str(op->name);
	printf(":{\"total\":%llu,\"ok\":%llu,", (unsigned long long)op->total,
	       (unsigned long long)op->ok);
	print_errors(op);
	printf(",\"failed_during_unload\":%llu,\"latency_us\":{\"p50\":%.3f,\"p90\":%.3f,"
	       "\"p99\":%.3f,\"max\":%.3f},",
	       (unsigned long long)op->during_unload, hist_pct_ns(op, 500) / 1000.0,
	       hist_pct_ns(op, 900) / 1000.0, hist_pct_ns(op, 990) / 1000.0,
	       op->max_ns / 1000.0);
	printf("\"failed_by_unloads_met\":[%llu,%llu,%llu],\"first_failure_ms\":",
	       (unsigned long long)op->met_unloads[0], (unsigned long long)op->met_unloads[1],
	       (unsigned long long)op->met_unloads[2]);
	if (op->first_failure_ns)
		printf("%.3f,", op->first_failure_ns / 1e6);
	else
		printf("null,");
	print_hist("hist", op->hist);
	putchar(',');
	print_hist("hist_failed", op->hist_failed);
	printf("}");
}

static unsigned long long us(u64 ns)
{
	return ns / 1000;
}

static void print_err_or_null(int e)
{
	if (e)
		print_err_name(e);
	else
		printf("null");
}

static void print_windows(void)
{
	u64 i, kept = nwindows < MAX_WINDOWS ? nwindows : MAX_WINDOWS;

	printf(",\"unloads\":{\"total\":%llu,\"windows\":[", (unsigned long long)nwindows);
	for (i = 0; i < kept; i++) {
		const struct unload_window *w = &windows[i];

		printf("%s[%llu,%llu,%llu,", i ? "," : "", us(w->begin), us(w->deleted),
		       us(w->reloaded));
		print_err_or_null(w->delete_err);
		putchar(',');
		print_err_or_null(w->load_err);
		putchar(']');
	}
	printf("]}");
}

static void print_rate(const unsigned int *bins)
{
	unsigned int i;

	for (i = 0; i < calls.bins; i++)
		printf("%s%u", i ? "," : "", bins[i]);
}

static void print_calls(void)
{
	u64 i, failed = calls.op->total - calls.op->ok;
	u64 kept = failed < MAX_FAILURES ? failed : MAX_FAILURES;

	printf(",\"calls\":{\"op\":");
	json_str(calls.op->name);
	printf(",\"failures_total\":%llu,\"failures\":[", (unsigned long long)failed);
	for (i = 0; i < kept; i++) {
		const struct call_failure *f = &calls.failures[i];

		printf("%s[%llu,%llu,", i ? "," : "", us(f->t0), us(f->t1));
		print_err_name(f->err);
		putchar(']');
	}
	printf("],\"bin_ms\":%llu,\"done\":[", RATE_BIN_NS / 1000000);
	print_rate(calls.done);
	printf("],\"ok\":[");
	print_rate(calls.ok);
	printf("]}");
}

static void print_events(void)
{
	printf(",\"events\":{\"start_ns\":%llu", (unsigned long long)start_ns);
	if (!strcmp(opt.role, "unloader"))
		print_windows();
	if (calls.op)
		print_calls();
	printf("}");
}

static void print_json(long elapsed_ms, const char *error)
{
	int i;

	printf("{\"format\":%d,\"role\":", OUTPUT_FORMAT);
	json_str(opt.role);
	printf(",\"name\":");
	json_str(opt.name ? opt.name : "");
	printf(",\"duration_ms\":%ld,\"iterations\":%llu,\"unload_generation\":%llu,\"ops\":{",
	       elapsed_ms, (unsigned long long)iterations,
	       (unsigned long long)__atomic_load_n(&shm->generation, __ATOMIC_RELAXED));
	for (i = 0; i < nops; i++) {
		if (i)
			putchar(',');
		print_op(&ops[i]);
	}
	printf("}");
	print_events();
	if (error) {
		printf(",\"error\":");
		json_str(error);
	}
	printf("}\n");
	fflush(stdout);
}

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

/* --- barrier --- */

static long futex(int *addr, int op, int val, const struct timespec *ts)
{
	return syscall(SYS_futex, addr, op, val, ts, NULL, 0);
}

static const char *barrier_map(void)
{
	int fd;
	void *p;

	fd = open(opt.barrier, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0 || ftruncate(fd, 4096) < 0)
		return "cannot open the barrier file";
	p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		return "cannot map the barrier file";
	shm = p;
	return NULL;
}

/* Take our arrival back (so the file can be reused) unless the barrier opened. */
static int barrier_leave(int n)
{
	return __atomic_compare_exchange_n(&shm->arrived, &n, n - 1, 0, __ATOMIC_SEQ_CST,
					   __ATOMIC_SEQ_CST);
}

/*
 * All roles start together: arrive, then sleep on the counter (a shared
 * futex) until the last one wakes everybody; 30 s at most (a role that
 * gives up takes its arrival back).  The file must be fresh (absent or
 * empty) after a completed start: more arrivals than parties means stale.
 */
static const char *barrier_wait(void)
{
	u64 deadline = now_ns() + BARRIER_TIMEOUT_NS;
	struct timespec ts = { 0, 1000000 };
	const char *err;
	int n;

	shm = &local_shm;
	if (!opt.barrier)
		return NULL;
	err = barrier_map();
	if (err)
		return err;
	n = __atomic_add_fetch(&shm->arrived, 1, __ATOMIC_SEQ_CST);
	if (n > opt.parties)
		return "stale barrier file (more arrivals than parties)";
	if (n == opt.parties) {
		futex(&shm->arrived, FUTEX_WAKE, INT_MAX, NULL);
		return NULL;
	}
	while ((n = __atomic_load_n(&shm->arrived, __ATOMIC_SEQ_CST)) < opt.parties) {
		if (stop || now_ns() > deadline) {
			if (barrier_leave(n))
				return stop ? "interrupted at the barrier" : "barrier timeout";
			continue;	/* the last one arrived meanwhile: go */
		}
		futex(&shm->arrived, FUTEX_WAIT, n, &ts);
	}
	return NULL;
}

/* --- module loading --- */

static long sys_finit_module(int fd, const char *params)
{
	return syscall(SYS_finit_module, fd, params, 0);
}

static long sys_delete_module(const char *name)
{
	return syscall(SYS_delete_module, name, O_NONBLOCK);
}

/* kmod's modprobe gives no errno: any failure is the pseudo-errno EMODPROBE. */
static int run_modprobe(const char *name)
{
	char *argv[] = { "/sbin/modprobe", "-q", (char *)name, NULL };
	char *envp[] = { "PATH=/sbin:/bin", NULL };
	int status;
	pid_t pid = fork();

	if (pid == 0) {
		execve(argv[0], argv, envp);
		_exit(127);
	}
	if (pid < 0)
		return errno;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return errno;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : EMODPROBE;
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
		fprintf(stderr, "racer: %s: %s\n", opt.ko, strerror(errno));
		exit(2);
	}
	return fd;
}

/* --- roles: each does one iteration per call; 1 = a full cycle --- */

static struct op_stats *op_a, *op_b;
static int role_fd = -1;
static char cmd[256];

static void unload_flag(int up)
{
	__atomic_store_n(&shm->unloading, up, __ATOMIC_SEQ_CST);
	__atomic_add_fetch(&shm->seq, 1, __ATOMIC_SEQ_CST);
}

/*
 * Unload, then load again.  An unload refused because the module is in use
 * (EAGAIN/EBUSY) is retried at once; the pause (--pause-us) only follows a
 * completed cycle, so the reloaded module stays live for a while, like an
 * idle module that gets unloaded automatically.
 */
static void window_record(u64 begin, u64 deleted, u64 reloaded, int delete_err, int load_err)
{
	struct unload_window *w;

	if (nwindows++ >= MAX_WINDOWS)
		return;
	w = &windows[nwindows - 1];
	w->begin = begin - start_ns;
	w->deleted = deleted - start_ns;
	w->reloaded = reloaded - start_ns;
	w->delete_err = delete_err;
	w->load_err = load_err;
}

static int unloader_step(void)
{
	struct op_tok tok, load_tok;
	u64 deleted;
	int err, load_err;

	unload_flag(1);
	__atomic_add_fetch(&shm->unloads, UNLOADS_BEGUN + 1, __ATOMIC_SEQ_CST);
	op_begin(&tok);
	err = sys_delete_module(opt.name) ? errno : 0;
	deleted = op_end(op_a, &tok, err);
	if (err)
		__atomic_sub_fetch(&shm->unloads, UNLOADS_BEGUN, __ATOMIC_SEQ_CST);
	/* ENOENT: an earlier reload failed and the module was absent since */
	if (!err || err == ENOENT) {
		op_begin(&load_tok);
		load_err = load_once(role_fd);
		window_record(tok.t0, deleted, op_end(op_b, &load_tok, load_err), err, load_err);
	}
	__atomic_sub_fetch(&shm->unloads, 1, __ATOMIC_SEQ_CST);
	unload_flag(0);
	if (err == EAGAIN || err == EBUSY)
		return 0;
	__atomic_add_fetch(&shm->generation, 1, __ATOMIC_SEQ_CST);
	return 1;
}

static int looker_step(void)
{
	size_t len = strlen(cmd);
	struct op_tok tok;
	ssize_t n;
	int err;

	op_begin(&tok);
	n = write(role_fd, cmd, len);
	err = n == (ssize_t)len ? 0 : (n < 0 ? errno : ESHORTWRITE);
	if (!err && opt.check_result >= 0) {
		char buf[32] = "";

		if (pread(role_fd, buf, sizeof(buf) - 1, 0) <= 0 ||
		    strtol(buf, NULL, 10) != opt.check_result)
			err = EWRONGRESULT;
	}
	op_end(op_a, &tok, err);
	return 1;
}

static int mounter_step(void)
{
	struct op_tok tok;
	int err;

	op_begin(&tok);
	err = mount("none", opt.dir, opt.fstype, 0, opt.data) ? errno : 0;
	op_end(op_a, &tok, err);
	if (!err) {
		op_begin(&tok);
		op_end(op_b, &tok, umount2(opt.dir, 0) ? errno : 0);
	}
	return 1;
}

static int holder_step(void)
{
	struct op_tok tok;
	int fd, err;

	op_begin(&tok);
	fd = open(opt.ctl, O_RDWR | O_CLOEXEC);
	err = fd < 0 ? errno : 0;
	if (!err && write(fd, cmd, strlen(cmd)) < 0)
		err = errno;
	op_end(op_a, &tok, err);
	if (!err) {
		if (opt.hold_us > 0)
			usleep(opt.hold_us);
		op_begin(&tok);
		op_end(op_b, &tok, write(fd, "release", 7) < 0 ? errno : 0);
	}
	if (fd >= 0)
		close(fd);
	return 1;
}

static int loader_step(void)
{
	struct op_tok tok;
	int err;

	op_begin(&tok);
	err = load_once(role_fd);
	op_end(op_a, &tok, err);
	if (!err && opt.unload) {
		op_begin(&tok);
		op_end(op_b, &tok, sys_delete_module(opt.name) ? errno : 0);
	}
	return 1;
}

/* --- setup --- */

typedef int (*step_fn)(void);

static step_fn setup_loading(int unloader)
{
	role_fd = open_ko();
	if (unloader) {
		op_a = op_new("delete_module");
		op_b = op_new("load");
		return unloader_step;
	}
	op_a = op_new("load");
	op_b = op_new("delete_module");
	return loader_step;
}

static step_fn setup_ctl(int looker)
{
	const char *verb = looker ? "lookup-call" : "hold";

	if (!opt.ctl)
		die_usage("--ctl is required");
	if (opt.bus >= 0)
		snprintf(cmd, sizeof(cmd), "%s %s %ld", verb, opt.name, opt.bus);
	else
		snprintf(cmd, sizeof(cmd), "%s %s", verb, opt.name);
	if (!looker) {
		op_a = op_new("hold");
		op_b = op_new("release");
		calls.op = op_a;
		return holder_step;
	}
	op_a = op_new("lookup");
	calls.op = op_a;
	role_fd = open(opt.ctl, O_RDWR | O_CLOEXEC);
	if (role_fd < 0) {
		shm = &local_shm;
		fprintf(stderr, "racer: %s: %s\n", opt.ctl, strerror(errno));
		print_json(0, "cannot open the control device");
		exit(1);
	}
	return looker_step;
}

static step_fn setup_mount(int fsmounter)
{
	static char data[300];

	if (!opt.dir || !opt.fstype)
		die_usage("--dir and --fstype are required");
	if (!opt.data && !fsmounter) {
		snprintf(data, sizeof(data), "backend=%s", opt.name);
		opt.data = data;
	}
	op_a = op_new("mount");
	op_b = op_new("umount");
	calls.op = op_a;
	return mounter_step;
}

static step_fn setup_role(void)
{
	const char *r = opt.role;

	if (!opt.name)
		die_usage("--name is required");
	if (!strcmp(r, "unloader") || !strcmp(r, "loader"))
		return setup_loading(r[0] == 'u');
	if (!strcmp(r, "looker") || !strcmp(r, "holder"))
		return setup_ctl(r[0] == 'l');
	if (!strcmp(r, "mounter") || !strcmp(r, "fsmounter"))
		return setup_mount(r[0] == 'f');
	die_usage("unknown role");
	return NULL;
}

static long parse_num(const char *s)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (!*s || *end || errno || v < -1)
		die_usage("a numeric option has a bad value");
	return v;
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
	int c;

	if (argc < 2 || argv[1][0] == '-')
		die_usage("a role comes first");
	opt.role = argv[1];
	opterr = 0;
	optind = 2;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'n':
			opt.name = optarg;
			break;
		case 'c':
			opt.ctl = optarg;
			break;
		case 'd':
			opt.dir = optarg;
			break;
		case 't':
			opt.fstype = optarg;
			break;
		case 'o':
			opt.data = optarg;
			break;
		case 'k':
			opt.ko = optarg;
			break;
		case 'P':
			opt.params = optarg;
			break;
		case 'l':
			opt.load = optarg;
			break;
		case 'u':
			opt.unload = 1;
			break;
		case 'b':
			opt.bus = parse_num(optarg);
			break;
		case 'r':
			opt.check_result = parse_num(optarg);
			break;
		case 'D':
			opt.duration_ms = parse_num(optarg);
			break;
		case 'N':
			opt.count = parse_num(optarg);
			break;
		case 'p':
			opt.pause_us = parse_num(optarg);
			break;
		case 'j':
			opt.jitter_us = parse_num(optarg);
			break;
		case 'h':
			opt.hold_us = parse_num(optarg);
			break;
		case 'B':
			opt.barrier = optarg;
			break;
		case 'a':
			opt.parties = parse_num(optarg);
			break;
		case 's':
			opt.seed = (unsigned int)parse_num(optarg);
			break;
		case 'g':
			opt.progress = 1;
			break;
		default:
			die_usage("unknown option or missing value");
		}
	}
	if (optind != argc)
		die_usage("unexpected argument");
	if (strcmp(opt.load, "finit") && strcmp(opt.load, "modprobe"))
		die_usage("--load is finit or modprobe");
	if (opt.duration_ms < 0 || opt.parties < 1)
		die_usage("--duration-ms must be >= 0 and --parties >= 1");
}

static void run_loop(step_fn step)
{
	u64 deadline = start_ns + (u64)opt.duration_ms * 1000000ull;
	u64 next_progress = start_ns + 1000000000ull;

	while (!stop && now_ns() < deadline &&
	       (opt.count < 0 || iterations < (u64)opt.count)) {
		int full = step();

		iterations++;
		if (opt.progress && now_ns() >= next_progress) {
			fprintf(stderr, "progress %llu\n", (unsigned long long)iterations);
			next_progress += 1000000000ull;
		}
		if (full)
			pause_between();
	}
}

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_signal };
	const char *err;
	step_fn step;

	parse_args(argc, argv);
	step = setup_role();
	srandom(opt.seed);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	err = barrier_wait();
	if (err) {
		print_json(0, err);
		return 3;
	}
	start_ns = now_ns();
	run_loop(step);
	print_json((long)((now_ns() - start_ns) / 1000000), NULL);
	return 0;
}
