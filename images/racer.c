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
 * Roles: unloader looker mounter fsmounter holder loader, and caller: one
 * generic call of any module's, named by --op (open, ioctl, mount, socket,
 * netdev-add, qdisc-add, exec; see usage()), its calls recorded under the op's name;
 * with --hold-us it keeps what it took across an unload (held_step()).
 * Built static on the host; no libc wrappers exist for the module syscalls.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <linux/futex.h>
#include <linux/if_alg.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef uint64_t u64;

#define MAX_OPS		4
#define ARRAY_SIZE(a)	(sizeof(a) / sizeof((a)[0]))

/* errno slots: real errnos below MAX_ERRNO, then pseudo-errnos */
#define MAX_ERRNO	256
#define EWRONGRESULT	(MAX_ERRNO + 0)	/* op succeeded, --check-result differs */
#define EMODPROBE	(MAX_ERRNO + 1)	/* /sbin/modprobe exited non-zero */
#define ESHORTWRITE	(MAX_ERRNO + 2)	/* write() returned less than the length */
#define EUNKNOWN	(MAX_ERRNO + 3)	/* errno out of range */
#define EEXIT		(MAX_ERRNO + 4)	/* exec: the command exited non-zero */
#define EKILLED		(MAX_ERRNO + 5)	/* exec: the command was killed by a signal */
#define ERR_SLOTS	(MAX_ERRNO + 6)

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

#define OUTPUT_FORMAT	3	/* 2: "events" and "hist_failed"; 3: "ok_live" */
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
	u64 gone;		/* GONE_DELETED per unload done + modules now absent */
	int changes;		/* futex word: bumped at each unload and reload done */
};

/*
 * shared.unloads packs both counts in one word, so that one load tells how
 * many unloads an operation overlapped: those in progress at its start plus
 * those begun before its end.  A refused delete_module is taken back.
 */
#define UNLOADS_BEGUN	256ull

/*
 * shared.gone tells a caller whether its call can have reached the module:
 * a call that succeeded with every unloaded module present at its start and
 * no unload completed before its end ran while the module was live (its
 * "ok_live").  A race without one such call never touched the module.
 */
#define GONE_DELETED	256ull
#define MET_SLOTS	3	/* failures that overlapped 0, 1, 2 or more unloads */

struct op_stats {
	const char *name;
	u64 total, ok, ok_live, during_unload;
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
	u64 gone;
	unsigned int seq;
	u64 held_ns;		/* a held call's hold: no part of its latency */
	int live;		/* -1: judged at its end; else judged at its take */
};

static struct {
	const char *role, *name, *ctl, *dir, *fstype, *data, *ko, *params;
	const char *barrier, *load, *op;
	char **args;		/* caller: the op's arguments (after --) */
	int nargs;
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
static u64 last_end_ns;		/* when the last op ended: the loop's clock */
static u64 deadline_ns;

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
	[EOPNOTSUPP] = "EOPNOTSUPP", [ENOTSOCK] = "ENOTSOCK", [EMSGSIZE] = "EMSGSIZE",
	[EPROTOTYPE] = "EPROTOTYPE", [ENOPROTOOPT] = "ENOPROTOOPT",
	[EPROTONOSUPPORT] = "EPROTONOSUPPORT", [ESOCKTNOSUPPORT] = "ESOCKTNOSUPPORT",
	[EAFNOSUPPORT] = "EAFNOSUPPORT", [EADDRINUSE] = "EADDRINUSE",
	[EADDRNOTAVAIL] = "EADDRNOTAVAIL", [ENETDOWN] = "ENETDOWN", [ENOBUFS] = "ENOBUFS",
	[ECONNREFUSED] = "ECONNREFUSED", [ESTALE] = "ESTALE", [EUCLEAN] = "EUCLEAN",
	[ENOMEDIUM] = "ENOMEDIUM", [ENOTUNIQ] = "ENOTUNIQ", [ENOLINK] = "ENOLINK",
};

static const char *const pseudo_names[ERR_SLOTS - MAX_ERRNO] = {
	"EWRONGRESULT", "EMODPROBE", "ESHORTWRITE", "EUNKNOWN", "EEXIT", "EKILLED",
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
		"usage: racer ROLE --name NAME [options] [-- ARG...]\n"
		"roles: unloader looker mounter fsmounter holder loader caller\n"
		"  --ctl PATH --dir DIR --fstype T --data S --ko PATH --params S\n"
		"  --load finit|modprobe --unload --bus N --check-result N\n"
		"  --duration-ms N --count N --pause-us N --jitter-us N --hold-us N\n"
		"  --barrier PATH --parties N --seed N --progress --op KIND\n"
		"caller --op KIND [--dir DIR] -- ARG...: one call of any module's per\n"
		"iteration, recorded under the op's name (numbers: C syntax, 0x ok):\n"
		"  open PATH [READ [r|w|rw]]    open O_NONBLOCK, read READ bytes, close\n"
		"  ioctl PATH REQUEST [r|w|rw]  open, ioctl with a zeroed buffer, close\n"
		"  mount SOURCE FSTYPE [DATA]   mount on --dir (default: a new\n"
		"                               /tmp/racer.PID.mnt), then umount\n"
		"  socket FAMILY TYPE PROTOCOL [ALGTYPE:ALGNAME]\n"
		"                               socket (AF_ALG: and bind), close\n"
		"  netdev-add KIND [peer] [data=N/TYPE/VALUE,...]\n"
		"                               RTM_NEWLINK racerPID (peer: with a\n"
		"                               peer racerpPID, veth's way; data: the\n"
		"                               kind's IFLA_INFO_DATA, TYPE u8, u16,\n"
		"                               u32 or flag), then RTM_DELLINK as op\n"
		"                               netdev-del\n"
		"  qdisc-add KIND               RTM_NEWQDISC of a root KIND qdisc on lo\n"
		"                               of a namespace of its own, then\n"
		"                               RTM_DELQDISC as op qdisc-del\n"
		"  exec CMD                     /bin/sh -c CMD, output to /dev/null;\n"
		"                               a non-zero exit is EEXIT, a signal EKILLED;\n"
		"                               $RACER_HOLD [MS] in CMD waits as a held\n"
		"                               call does (racer wait-unload); the call\n"
		"                               is judged live at its first hold\n"
		"caller --hold-us N: keep what the call took until an unload is done\n"
		"since, N us at most, then use it (open: read; ioctl: the ioctl; mount:\n"
		"stat and read its root; AF_ALG: accept, hash: write and read) and\n"
		"release it; exec cannot be held, but its command can run $RACER_HOLD\n"
		"racer wait-unload BARRIER DEADLINE_NS [MS]: return once an unload is\n"
		"done since the start, after MS (default 5000) or at DEADLINE_NS\n");
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
	tok->gone = __atomic_load_n(&shm->gone, __ATOMIC_SEQ_CST);
	tok->held_ns = 0;
	tok->live = -1;
	tok->t0 = now_ns();
}

/* Every unloaded module present at the call's start, no unload done since. */
static int call_live(const struct op_tok *tok)
{
	return !(tok->gone % GONE_DELETED) &&
	       __atomic_load_n(&shm->gone, __ATOMIC_SEQ_CST) / GONE_DELETED ==
	       tok->gone / GONE_DELETED;
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
	u64 t1 = now_ns(), dt = t1 - tok->t0 - tok->held_ns;
	unsigned int idx = hist_index(dt);

	last_end_ns = t1;

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
	if (!err && (tok->live >= 0 ? tok->live : call_live(tok)))
		op->ok_live++;
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
	printf(":{\"total\":%llu,\"ok\":%llu,\"ok_live\":%llu,", (unsigned long long)op->total,
	       (unsigned long long)op->ok, (unsigned long long)op->ok_live);
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
	if (!strcmp(opt.role, "caller") && opt.hold_us > 0)
		printf(",\"hold_us\":%ld", opt.hold_us);
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

/* Returns whether it slept. */
static int pause_between(void)
{
	long us = opt.pause_us;

	if (opt.jitter_us > 0)
		us += random() % (opt.jitter_us + 1);
	if (us > 0)
		usleep(us);
	return us > 0;
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

/* Wakes the held callers that wait for an unload or a reload (wait_for()). */
static void shared_changed(void)
{
	__atomic_add_fetch(&shm->changes, 1, __ATOMIC_SEQ_CST);
	futex(&shm->changes, FUTEX_WAKE, INT_MAX, NULL);
}

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
	static int absent;	/* deleted by us and not loaded again yet */
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
	if (!err) {
		/* absent already: a caller's request_module had loaded it again */
		__atomic_add_fetch(&shm->gone, GONE_DELETED + !absent, __ATOMIC_SEQ_CST);
		absent = 1;
		shared_changed();
	}
	/* ENOENT: an earlier reload failed and the module was absent since */
	if (!err || err == ENOENT) {
		op_begin(&load_tok);
		load_err = load_once(role_fd);
		window_record(tok.t0, deleted, op_end(op_b, &load_tok, load_err), err, load_err);
		if ((!load_err || load_err == EEXIST) && absent) {
			__atomic_sub_fetch(&shm->gone, 1, __ATOMIC_SEQ_CST);
			absent = 0;
			shared_changed();
		}
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

/* --- caller: one generic call of any module's (--op KIND -- ARG...) --- */

#define IO_BUF_SIZE	65536	/* open's READ at most; above any ioctl size (2^14) */
#define IOCTL_NOSIZE	1024	/* zeroed for an ioctl number that encodes no size */

static struct {
	const char *path, *source, *fstype, *data;
	int flags;		/* open(2) flags: O_NONBLOCK | O_CLOEXEC | the mode */
	unsigned long mflags;	/* mount(2) flags: MS_RDONLY for an "ro" option */
	size_t len;		/* open: bytes to read; ioctl: bytes to zero */
	unsigned long request;
	int family, type, protocol, bind, hash;
	struct sockaddr_alg alg;
	int nl_fd, null_fd;
	int note_fd, note_wfd;	/* exec: the pipe of its $RACER_HOLD notes */
	int fd, fd2;		/* held: what the take opened (-1: nothing) */
	int holding;		/* held: the take left something to release */
	char *sh_argv[4];
	char ifname[IFNAMSIZ], peer[IFNAMSIZ], dir[64];
} co = { .nl_fd = -1, .null_fd = -1, .note_fd = -1, .note_wfd = -1, .fd = -1, .fd2 = -1 };

static char io_buf[IO_BUF_SIZE];

/* An rtnetlink request: built once in setup, sent as is in the loop. */
struct nl_req {
	struct nlmsghdr nh;
	char body[512];
};

static struct nl_req nl_new, nl_del;
static char nl_reply[8192];
static unsigned int nl_seq;

static int open_step(void)
{
	struct op_tok tok;
	int fd, err;

	op_begin(&tok);
	fd = open(co.path, co.flags);
	err = fd < 0 ? errno : 0;
	if (!err && co.len && read(fd, io_buf, co.len) < 0)
		err = errno;
	if (fd >= 0 && close(fd) && !err)
		err = errno;
	op_end(op_a, &tok, err);
	return 1;
}

static int ioctl_step(void)
{
	struct op_tok tok;
	int fd, err;

	memset(io_buf, 0, co.len);	/* the last call may have written to it */
	op_begin(&tok);
	fd = open(co.path, co.flags);
	err = fd < 0 ? errno : 0;
	if (!err && ioctl(fd, co.request, io_buf) < 0)
		err = errno;
	if (fd >= 0 && close(fd) && !err)
		err = errno;
	op_end(op_a, &tok, err);
	return 1;
}

static int caller_mount_step(void)
{
	struct op_tok tok;
	int err;

	op_begin(&tok);
	err = mount(co.source, opt.dir, co.fstype, co.mflags, co.data) ? errno : 0;
	op_end(op_a, &tok, err);
	if (!err) {
		op_begin(&tok);
		op_end(op_b, &tok, umount2(opt.dir, 0) ? errno : 0);
	}
	return 1;
}

static int socket_step(void)
{
	struct op_tok tok;
	int fd, err;

	op_begin(&tok);
	fd = socket(co.family, co.type | SOCK_CLOEXEC, co.protocol);
	err = fd < 0 ? errno : 0;
	if (!err && co.bind && bind(fd, (struct sockaddr *)&co.alg, sizeof(co.alg)) < 0)
		err = errno;
	if (fd >= 0 && close(fd) && !err)
		err = errno;
	op_end(op_a, &tok, err);
	return 1;
}

/* One rtnetlink request and its ack: 0 or the errno the ack carries. */
static int rtnl_call(struct nl_req *req)
{
	const struct nlmsghdr *nh = (const struct nlmsghdr *)nl_reply;
	ssize_t n;

	req->nh.nlmsg_seq = ++nl_seq;
	if (send(co.nl_fd, req, req->nh.nlmsg_len, 0) < 0)
		return errno;
	for (;;) {	/* skip what an interrupted earlier request left behind */
		n = recv(co.nl_fd, nl_reply, sizeof(nl_reply), 0);
		if (n < 0)
			return errno;
		if (n >= (ssize_t)NLMSG_LENGTH(sizeof(struct nlmsgerr)) &&
		    nh->nlmsg_type == NLMSG_ERROR && nh->nlmsg_seq == nl_seq)
			return -((const struct nlmsgerr *)NLMSG_DATA(nh))->error;
	}
}

/*
 * Add the link, and delete it again if it is there (added, or left over:
 * EEXIST).  An unload deletes the driver's links itself: netdev-del ENODEV.
 */
static int netdev_step(void)
{
	struct op_tok tok;
	int err;

	op_begin(&tok);
	err = rtnl_call(&nl_new);
	op_end(op_a, &tok, err);
	if (!err || err == EEXIST) {
		op_begin(&tok);
		op_end(op_b, &tok, rtnl_call(&nl_del));
	}
	return 1;
}

/*
 * Held calls (--hold-us N): a caller keeps what its call took (a file, a
 * mount, a socket, a link) until the unloader has completed an unload since
 * the take, or N us at most, and only then uses it and releases it: what a
 * driver without .owner cannot survive, as the release runs in freed text.
 * The call is recorded as one, under the kind's name: its latency leaves the
 * hold out, it reached the module if the module was live over the take, and
 * a use or a release that fails after the unload fails the call.  Between
 * held calls the caller rests until the module has been unloaded and is back
 * (N us at most), so that it never pins a module with an .owner for good.
 */
static int deleted_since(u64 gone)
{
	return __atomic_load_n(&shm->gone, __ATOMIC_SEQ_CST) / GONE_DELETED > gone / GONE_DELETED;
}

static int back_since(u64 gone)
{
	u64 now = __atomic_load_n(&shm->gone, __ATOMIC_SEQ_CST);

	return now / GONE_DELETED > gone / GONE_DELETED && !(now % GONE_DELETED);
}

static u64 rest_gone;		/* shm->gone at the last take that asks for a rest */
static u64 rest_ns;		/* 0: no rest before the next call */

/* Sleeps until done(since), the time until, the deadline or a signal. */
static void wait_for(int (*done)(u64 since), u64 since, u64 until)
{
	for (;;) {
		int seen = __atomic_load_n(&shm->changes, __ATOMIC_SEQ_CST);
		u64 now = now_ns(), end = until < deadline_ns ? until : deadline_ns;
		struct timespec ts;

		if (stop || done(since) || now >= end)
			return;
		ts.tv_sec = (end - now) / 1000000000ull;
		ts.tv_nsec = (end - now) % 1000000000ull;
		futex(&shm->changes, FUTEX_WAIT, seen, &ts);
	}
}

/* Between holds: until the module has been unloaded and is back, rest_ns at most. */
static void rest(void)
{
	if (rest_ns)
		wait_for(back_since, rest_gone, now_ns() + rest_ns);
}

/*
 * $RACER_HOLD, for the command of an exec caller: this racer's wait-unload
 * on the race's barrier file and end.  A shell line that takes something
 * (opens a device node, adds a link) and then runs $RACER_HOLD keeps it
 * across the next unload, as a held call does; exec itself cannot be held
 * because only the command knows what it took.
 *
 * Each hold sends the caller a note on HOLD_NOTE_FD (a pipe), so that the
 * call is judged as a held call is: it reached the module if the module was
 * live when the hold began (the command's take), its holds are no part of
 * its latency, and the next call rests until the module is unloaded and
 * back.  Judged at its end instead, a call that held a module with an owner
 * never counts: the module is pinned for the whole hold, and the unloader,
 * retrying, deletes it between the release and the caller's waitpid().
 */
#define HOLD_NOTE_FD	200	/* above the shell's one-digit redirections */

struct hold_note {
	u64 gone;		/* shm->gone when the hold began */
	u64 held_ns;
	u64 ms;			/* the hold's longest wait: the rest's too */
};

/* vfork: the child only execs, and a big static process forks slowly. */
static pid_t spawn_sh(void)
{
	pid_t pid = vfork();

	if (pid == 0) {
		dup2(co.null_fd, 0);
		dup2(co.null_fd, 1);	/* stdout carries our JSON */
		dup2(co.null_fd, 2);
		if (co.note_wfd >= 0)
			dup2(co.note_wfd, HOLD_NOTE_FD);
		execve("/bin/sh", co.sh_argv, environ);
		_exit(127);
	}
	return pid;
}

static void export_hold(void)
{
	static char exe[PATH_MAX], hold[PATH_MAX * 3];
	int fds[2];
	ssize_t n;

	if (!opt.barrier || getenv("RACER_HOLD"))
		return;
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n <= 0)
		return;
	exe[n] = 0;
	snprintf(hold, sizeof(hold), "%s wait-unload %s %llu", exe, opt.barrier,
		 (unsigned long long)deadline_ns);
	setenv("RACER_HOLD", hold, 1);
	if (pipe2(fds, O_CLOEXEC | O_NONBLOCK))
		return;
	co.note_fd = fds[0];
	co.note_wfd = fds[1];
	snprintf(hold, sizeof(hold), "%d", HOLD_NOTE_FD);
	setenv("RACER_HOLD_FD", hold, 1);
}

/* Reads the call's hold notes: the first hold's start is the call's take. */
static void exec_notes(struct op_tok *tok)
{
	struct hold_note note;
	int first = 1;

	rest_ns = 0;
	if (co.note_fd < 0)
		return;
	while (read(co.note_fd, &note, sizeof(note)) == sizeof(note)) {
		tok->held_ns += note.held_ns;
		if (!first)
			continue;
		first = 0;
		/*
		 * Present when the hold began, whatever happened since the
		 * call's start: a shell and its tools start slowly, and an
		 * unload done meanwhile most often came before the take (an
		 * owner pins the module from the take on).
		 */
		tok->live = !(note.gone % GONE_DELETED);
		if (tok->live) {
			rest_gone = note.gone;
			rest_ns = note.ms * 1000000ull;
		}
	}
}

static int exec_step(void)
{
	struct op_tok tok;
	int status = 0, err = 0;
	pid_t pid;

	export_hold();
	rest();
	op_begin(&tok);
	pid = spawn_sh();
	if (pid < 0)
		err = errno;
	while (!err && waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			err = errno;
	if (!err && WIFSIGNALED(status))
		err = EKILLED;
	else if (!err && WEXITSTATUS(status))
		err = EEXIT;
	exec_notes(&tok);
	op_end(op_a, &tok, err);
	return 1;
}

static int fd_take(void)
{
	co.fd = open(co.path, co.flags);
	co.holding = co.fd >= 0;
	return co.fd < 0 ? errno : 0;
}

static int fd_release(void)
{
	int err = 0;

	if (co.fd2 >= 0 && close(co.fd2))
		err = errno;
	if (co.fd >= 0 && close(co.fd) && !err)
		err = errno;
	co.fd = -1;
	co.fd2 = -1;
	co.holding = 0;
	return err;
}

static int open_use(void)
{
	return co.len && read(co.fd, io_buf, co.len) < 0 ? errno : 0;
}

static int ioctl_use(void)
{
	memset(io_buf, 0, co.len);
	return ioctl(co.fd, co.request, io_buf) < 0 ? errno : 0;
}

static int mount_take(void)
{
	int err = mount(co.source, opt.dir, co.fstype, co.mflags, co.data) ? errno : 0;

	co.holding = !err;
	return err;
}

/* A stat of the mount's root and a read of its entries. */
static int mount_use(void)
{
	struct stat st;
	int fd, err = 0;

	if (stat(opt.dir, &st))
		return errno;
	fd = open(opt.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return errno;
	if (syscall(SYS_getdents64, fd, io_buf, sizeof(io_buf)) < 0)
		err = errno;
	close(fd);
	return err;
}

static int mount_release(void)
{
	co.holding = 0;
	return umount2(opt.dir, 0) ? errno : 0;
}

static int socket_take(void)
{
	co.fd = socket(co.family, co.type | SOCK_CLOEXEC, co.protocol);
	if (co.fd < 0)
		return errno;
	co.holding = 1;
	if (co.bind && bind(co.fd, (struct sockaddr *)&co.alg, sizeof(co.alg)) < 0)
		return errno;
	return 0;
}

/* AF_ALG: an accept, and for a hash a write and a read of the digest. */
static int socket_use(void)
{
	if (!co.bind)
		return 0;
	co.fd2 = accept4(co.fd, NULL, NULL, SOCK_CLOEXEC);
	if (co.fd2 < 0)
		return errno;
	if (co.hash && write(co.fd2, io_buf, 16) < 0)
		return errno;
	if (co.hash && read(co.fd2, io_buf, 64) < 0)
		return errno;
	return 0;
}

static int netdev_take(void)
{
	int err = rtnl_call(&nl_new);

	co.holding = !err || err == EEXIST;	/* EEXIST: a leftover, deleted too */
	return err;
}

static int nothing_to_use(void)
{
	return 0;
}

static int netdev_release(void)
{
	co.holding = 0;
	return rtnl_call(&nl_del);
}

/*
 * The caller's op kinds: --op KIND, its arguments, and the second op that
 * undoes the call (NULL: none).  The call is recorded under the kind's name.
 * A held call (take, use, release; take NULL: it cannot be held) releases
 * through the undo op if there is one, else as part of the call.
 */
struct caller_kind {
	const char *kind, *undo;
	int min_args, max_args;
	void (*setup)(char **args, int nargs);
	int (*step)(void);
	int (*take)(void);
	int (*use)(void);
	int (*release)(void);
};

static const struct caller_kind *held;

static int held_step(void)
{
	u64 hold_ns = (u64)opt.hold_us * 1000ull, t;
	struct op_tok tok, undo;
	int err;

	rest();
	op_begin(&tok);
	err = held->take();
	if (!err) {
		tok.live = call_live(&tok);
		rest_gone = tok.gone;
		rest_ns = hold_ns;
		t = now_ns();
		wait_for(deleted_since, tok.gone, t + hold_ns);
		tok.held_ns = now_ns() - t;
		err = held->use();
	}
	if (co.holding && !held->undo) {
		int rel = held->release();

		err = err ? err : rel;
	}
	op_end(op_a, &tok, err);
	if (co.holding) {
		op_begin(&undo);
		op_end(op_b, &undo, held->release());
	}
	return 1;
}

/* --- setup --- */

typedef int (*step_fn)(void);

/* A setup failure the host must see: JSON with the error, exit status 1. */
static void setup_fail(const char *path, const char *error)
{
	shm = &local_shm;
	fprintf(stderr, "racer: %s: %s\n", path, strerror(errno));
	print_json(0, error);
	exit(1);
}

static unsigned long parse_unsigned(const char *s, unsigned long max, const char *msg)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 0);
	if (!*s || *s == '-' || *end || errno || v > max)
		die_usage(msg);
	return v;
}

static int open_mode(const char *mode)
{
	if (!mode || !strcmp(mode, "r"))
		return O_RDONLY;
	if (!strcmp(mode, "w"))
		return O_WRONLY;
	if (!strcmp(mode, "rw"))
		return O_RDWR;
	die_usage("an open mode is r, w or rw");
	return 0;
}

static void setup_open(char **args, int nargs)
{
	co.path = args[0];
	if (nargs > 1)
		co.len = parse_unsigned(args[1], IO_BUF_SIZE, "open: READ is 0 to 65536");
	co.flags = O_NONBLOCK | O_CLOEXEC | open_mode(nargs > 2 ? args[2] : NULL);
}

static void setup_ioctl(char **args, int nargs)
{
	co.path = args[0];
	co.request = parse_unsigned(args[1], UINT_MAX, "ioctl: REQUEST is a 32-bit number");
	co.len = _IOC_SIZE(co.request) ? _IOC_SIZE(co.request) : IOCTL_NOSIZE;
	co.flags = O_NONBLOCK | O_CLOEXEC | open_mode(nargs > 2 ? args[2] : NULL);
}

/*
 * "ro" among the options is a flag, as mount(8) takes it, not data for the
 * file system: iso9660 and udf refuse a read-write mount.  It is cut out of
 * the comma list in place; what is left (maybe nothing) is the data.
 */
static unsigned long take_ro(char *data)
{
	unsigned long flags = 0;
	char *out = data, *tok, *save = NULL;

	for (tok = strtok_r(data, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (!strcmp(tok, "ro")) {
			flags |= MS_RDONLY;
			continue;
		}
		if (out != data)
			*out++ = ',';
		memmove(out, tok, strlen(tok));
		out += strlen(tok);
	}
	*out = '\0';
	return flags;
}

static void setup_caller_mount(char **args, int nargs)
{
	co.source = args[0];
	co.fstype = args[1];
	co.data = nargs > 2 ? args[2] : NULL;
	if (nargs > 2) {
		co.mflags = take_ro(args[2]);
		if (!*args[2])
			co.data = NULL;
	}
	if (!opt.dir) {
		snprintf(co.dir, sizeof(co.dir), "/tmp/racer.%d.mnt", (int)getpid());
		opt.dir = co.dir;
	}
	if (mkdir(opt.dir, 0755) && errno != EEXIST)
		setup_fail(opt.dir, "cannot make the mount point");
}

static void setup_socket(char **args, int nargs)
{
	char *colon;

	co.family = parse_unsigned(args[0], 0xffff, "socket: FAMILY is a number");
	co.type = parse_unsigned(args[1], 0xffff, "socket: TYPE is a number");
	co.protocol = parse_unsigned(args[2], INT_MAX, "socket: PROTOCOL is a number");
	if (nargs < 4)
		return;
	colon = strchr(args[3], ':');
	if (co.family != AF_ALG || !colon || colon == args[3] || !colon[1] ||
	    colon - args[3] >= (long)sizeof(co.alg.salg_type) ||
	    strlen(colon + 1) >= sizeof(co.alg.salg_name))
		die_usage("socket: only AF_ALG binds, to ALGTYPE:ALGNAME (13, 63 bytes at most)");
	co.alg.salg_family = AF_ALG;
	co.hash = colon - args[3] == 4 && !strncmp(args[3], "hash", 4);
	memcpy(co.alg.salg_type, args[3], colon - args[3]);
	strcpy((char *)co.alg.salg_name, colon + 1);
	co.bind = 1;
}

/* Appends an attribute (len bytes of data) to a request; returns it, for nesting. */
static struct rtattr *nl_put(struct nl_req *req, unsigned short type, const void *data,
			     size_t len)
{
	struct rtattr *rta = (struct rtattr *)((char *)req + NLMSG_ALIGN(req->nh.nlmsg_len));

	rta->rta_type = type;
	rta->rta_len = RTA_LENGTH(len);
	if (len)
		memcpy(RTA_DATA(rta), data, len);
	req->nh.nlmsg_len = NLMSG_ALIGN(req->nh.nlmsg_len) + RTA_ALIGN(rta->rta_len);
	return rta;
}

/* A nested attribute ends where the request ends now. */
static void nl_nest_end(struct nl_req *req, struct rtattr *nest)
{
	nest->rta_len = (char *)req + req->nh.nlmsg_len - (char *)nest;
}

static void nl_init(struct nl_req *req, unsigned short type, unsigned short flags,
		    const char *ifname)
{
	struct ifinfomsg ifi = { .ifi_family = AF_UNSPEC };

	req->nh.nlmsg_len = NLMSG_LENGTH(sizeof(ifi));
	req->nh.nlmsg_type = type;
	req->nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
	memcpy(NLMSG_DATA(&req->nh), &ifi, sizeof(ifi));
	nl_put(req, IFLA_IFNAME, ifname, strlen(ifname) + 1);
}

/*
 * Appends the attributes of "N/TYPE/VALUE[,...]" (TYPE u8, u16, u32 or flag)
 * to a request: a link kind's own IFLA_INFO_DATA, such as gtp's
 * IFLA_GTP_CREATE_SOCKETS, without which its newlink refuses the link.
 */
static void nl_put_data(struct nl_req *req, const char *spec)
{
	static const struct { const char *name; size_t len; } types[] = {
		{ "u8", 1 }, { "u16", 2 }, { "u32", 4 }, { "flag", 0 },
	};
	union { uint8_t u8; uint16_t u16; uint32_t u32; } value;
	unsigned int attr;
	char type[8];
	long v;
	int used;
	size_t i;

	for (;;) {
		v = 0;
		if (sscanf(spec, "%u/%7[a-z0-9]%n", &attr, type, &used) != 2 ||
		    !attr || attr > 0xffff)
			die_usage("netdev-add: data is N/TYPE/VALUE[,...]");
		spec += used;
		for (i = 0; i < ARRAY_SIZE(types) && strcmp(types[i].name, type); i++)
			;
		if (i == ARRAY_SIZE(types))
			die_usage("netdev-add: a data TYPE is u8, u16, u32 or flag");
		if (types[i].len) {
			if (sscanf(spec, "/%li%n", &v, &used) != 1)
				die_usage("netdev-add: data is N/TYPE/VALUE[,...]");
			spec += used;
		}
		if (sizeof(*req) - NLMSG_ALIGN(req->nh.nlmsg_len) < RTA_SPACE(4))
			die_usage("netdev-add: too much data");
		if (types[i].len == 1)
			value.u8 = v;
		else if (types[i].len == 2)
			value.u16 = v;
		else
			value.u32 = v;
		nl_put(req, attr, &value, types[i].len);
		if (!*spec)
			return;
		if (*spec++ != ',')
			die_usage("netdev-add: data is N/TYPE/VALUE[,...]");
	}
}

/*
 * RTM_NEWLINK racerPID of KIND (veth's way: with a peer; with data: the
 * kind's own attributes), RTM_DELLINK of it.
 */
static void setup_netdev(char **args, int nargs)
{
	const char *kind = args[0];
	struct ifinfomsg peer = { .ifi_family = AF_UNSPEC };
	struct rtattr *info, *data, *nest;
	const char *spec = NULL;
	int with_peer = 0, i;

	for (i = 1; i < nargs; i++) {
		if (!strcmp(args[i], "peer"))
			with_peer = 1;
		else if (!strncmp(args[i], "data=", 5))
			spec = args[i] + 5;
		else
			die_usage("netdev-add: after KIND come only peer and data=SPEC");
	}
	if (!*kind || strlen(kind) > 64)
		die_usage("netdev-add: KIND is 1 to 64 bytes");
	snprintf(co.ifname, sizeof(co.ifname), "racer%d", (int)getpid() % 10000000);
	snprintf(co.peer, sizeof(co.peer), "racerp%d", (int)getpid() % 10000000);
	nl_init(&nl_new, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, co.ifname);
	info = nl_put(&nl_new, IFLA_LINKINFO, NULL, 0);
	nl_put(&nl_new, IFLA_INFO_KIND, kind, strlen(kind));
	if (with_peer || spec) {
		data = nl_put(&nl_new, IFLA_INFO_DATA, NULL, 0);
		if (with_peer) {
			nest = nl_put(&nl_new, VETH_INFO_PEER, &peer, sizeof(peer));
			nl_put(&nl_new, IFLA_IFNAME, co.peer, strlen(co.peer) + 1);
			nl_nest_end(&nl_new, nest);
		}
		if (spec)
			nl_put_data(&nl_new, spec);
		nl_nest_end(&nl_new, data);
	}
	nl_nest_end(&nl_new, info);
	nl_init(&nl_del, RTM_DELLINK, 0, co.ifname);
	co.nl_fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (co.nl_fd < 0)
		setup_fail("NETLINK_ROUTE", "cannot open a netlink socket");
}

/*
 * qdisc-add KIND: RTM_NEWQDISC of a root qdisc of KIND (ingress, clsact: at
 * the ingress hook) on the loopback device of a network namespace of the
 * caller's own, so that callers never replace each other's qdisc; then
 * RTM_DELQDISC, recorded as qdisc-del.  The netdev steps serve it as they
 * are: a request, then its undo if the first was made.
 */
static void setup_qdisc(char **args, int nargs)
{
	const char *kind = args[0];
	int ingress = !strcmp(kind, "ingress") || !strcmp(kind, "clsact");
	struct tcmsg tcm = {
		.tcm_family = AF_UNSPEC,
		.tcm_ifindex = 1,	/* lo, the first device of every namespace */
		.tcm_parent = ingress ? TC_H_INGRESS : TC_H_ROOT,
		.tcm_handle = ingress ? TC_H_MAKE(TC_H_INGRESS, 0) : TC_H_MAKE(1u << 16, 0),
	};
	struct nl_req *reqs[] = { &nl_new, &nl_del };
	unsigned int i;

	(void)nargs;
	if (!*kind || strlen(kind) >= IFNAMSIZ)
		die_usage("qdisc-add: KIND is 1 to 15 bytes");
	if (unshare(CLONE_NEWNET))
		setup_fail("CLONE_NEWNET", "cannot make a network namespace");
	for (i = 0; i < ARRAY_SIZE(reqs); i++) {
		reqs[i]->nh.nlmsg_len = NLMSG_LENGTH(sizeof(tcm));
		reqs[i]->nh.nlmsg_type = i ? RTM_DELQDISC : RTM_NEWQDISC;
		reqs[i]->nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | (i ? 0 : NLM_F_CREATE | NLM_F_EXCL);
		memcpy(NLMSG_DATA(&reqs[i]->nh), &tcm, sizeof(tcm));
		nl_put(reqs[i], TCA_KIND, kind, strlen(kind) + 1);
	}
	co.nl_fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (co.nl_fd < 0)
		setup_fail("NETLINK_ROUTE", "cannot open a netlink socket");
}

static void setup_exec(char **args, int nargs)
{
	(void)nargs;
	co.sh_argv[0] = "sh";
	co.sh_argv[1] = "-c";
	co.sh_argv[2] = args[0];
	co.null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (co.null_fd < 0)
		setup_fail("/dev/null", "cannot open /dev/null");
}

static const struct caller_kind caller_kinds[] = {
	{ "open", NULL, 1, 3, setup_open, open_step, fd_take, open_use, fd_release },
	{ "ioctl", NULL, 2, 3, setup_ioctl, ioctl_step, fd_take, ioctl_use, fd_release },
	{ "mount", "umount", 2, 3, setup_caller_mount, caller_mount_step,
	  mount_take, mount_use, mount_release },
	{ "socket", NULL, 3, 4, setup_socket, socket_step, socket_take, socket_use, fd_release },
	{ "netdev-add", "netdev-del", 1, 3, setup_netdev, netdev_step,
	  netdev_take, nothing_to_use, netdev_release },
	{ "qdisc-add", "qdisc-del", 1, 1, setup_qdisc, netdev_step,
	  netdev_take, nothing_to_use, netdev_release },
	{ "exec", NULL, 1, 1, setup_exec, exec_step, NULL, NULL, NULL },
};

static step_fn setup_caller(void)
{
	const struct caller_kind *k = caller_kinds;
	size_t n = ARRAY_SIZE(caller_kinds);

	if (!opt.op)
		die_usage("caller needs --op KIND");
	while (k < caller_kinds + n && strcmp(k->kind, opt.op))
		k++;
	if (k == caller_kinds + n)
		die_usage("unknown --op KIND");
	if (opt.nargs < k->min_args || opt.nargs > k->max_args)
		die_usage("wrong number of arguments for this --op");
	op_a = op_new(k->kind);
	if (k->undo)
		op_b = op_new(k->undo);
	calls.op = op_a;
	k->setup(opt.args, opt.nargs);
	if (opt.hold_us <= 0)
		return k->step;
	if (!k->take)
		die_usage("this --op cannot be held (--hold-us)");
	held = k;
	return held_step;
}

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
	if (role_fd < 0)
		setup_fail(opt.ctl, "cannot open the control device");
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
	if (!strcmp(r, "caller"))
		return setup_caller();
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
		{ "op", 1, 0, 'O' }, { 0, 0, 0, 0 }
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
		case 'O':
			opt.op = optarg;
			break;
		default:
			die_usage("unknown option or missing value");
		}
	}
	opt.args = argv + optind;
	opt.nargs = argc - optind;
	if (opt.nargs && strcmp(opt.role, "caller"))
		die_usage("unexpected argument");
	if (strcmp(opt.load, "finit") && strcmp(opt.load, "modprobe"))
		die_usage("--load is finit or modprobe");
	if (opt.duration_ms < 0 || opt.parties < 1)
		die_usage("--duration-ms must be >= 0 and --parties >= 1");
}

/*
 * The time an iteration ended is its last op's end: the loop reads the clock
 * again only after a pause, so that it costs a generic op nothing more than
 * the two reads that time it.
 */
static void run_loop(step_fn step)
{
	u64 deadline = start_ns + (u64)opt.duration_ms * 1000000ull;
	u64 next_progress = start_ns + 1000000000ull;
	u64 now = start_ns;

	deadline_ns = deadline;
	while (!stop && now < deadline && (opt.count < 0 || iterations < (u64)opt.count)) {
		int full;

		last_end_ns = 0;
		full = step();
		iterations++;
		now = last_end_ns ? last_end_ns : now_ns();
		if (opt.progress && now >= next_progress) {
			fprintf(stderr, "progress %llu\n", (unsigned long long)iterations);
			next_progress += 1000000000ull;
		}
		if (full && pause_between())
			now = now_ns();
	}
}

#define WAIT_UNLOAD_MS	5000	/* $RACER_HOLD's longest wait, unless MS says */

/* `racer wait-unload BARRIER DEADLINE_NS [MS]`: what $RACER_HOLD runs. */
static int wait_unload(int argc, char **argv)
{
	u64 gone, t, ms = argc > 4 ? (u64)parse_num(argv[4]) : WAIT_UNLOAD_MS;
	const char *fd = getenv("RACER_HOLD_FD");

	opt.barrier = argv[2];
	deadline_ns = (u64)parse_num(argv[3]);
	if (barrier_map()) {
		fprintf(stderr, "racer wait-unload: cannot map %s\n", opt.barrier);
		return 2;
	}
	gone = __atomic_load_n(&shm->gone, __ATOMIC_SEQ_CST);
	t = now_ns();
	wait_for(deleted_since, gone, t + ms * 1000000ull);
	if (fd) {
		struct hold_note note = { gone, now_ns() - t, ms };

		/* one write under PIPE_BUF: whole; no caller's pipe, no note */
		if (write(atoi(fd), &note, sizeof(note)) < 0)
			return 0;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_signal };
	const char *err;
	step_fn step;

	if (argc >= 4 && argc <= 5 && !strcmp(argv[1], "wait-unload"))
		return wait_unload(argc, argv);
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
	if (co.dir[0])
		rmdir(co.dir);	/* the mount point the caller made itself */
	print_json((long)((now_ns() - start_ns) / 1000000), NULL);
	return 0;
}
