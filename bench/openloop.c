// SPDX-License-Identifier: GPL-2.0
/*
 * openloop - the racer's "open" op written by hand, for bench/bench.py: open
 * (O_RDONLY | O_NONBLOCK | O_CLOEXEC) and close PATH in a tight loop for
 * DURATION_MS, stopped by an interval timer so that the loop itself reads no
 * clock, then print one JSON object: {"calls", "failed", "elapsed_ms"}.
 *
 * usage: openloop PATH DURATION_MS
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_alarm(int sig)
{
	(void)sig;
	stop = 1;
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_alarm };
	struct itimerval it = { { 0, 0 }, { 0, 0 } };
	unsigned long long calls = 0, failed = 0;
	long ms;
	double t0;
	int fd;

	ms = argc == 3 ? atol(argv[2]) : 0;
	if (ms <= 0) {
		fprintf(stderr, "usage: openloop PATH DURATION_MS\n");
		return 2;
	}
	it.it_value.tv_sec = ms / 1000;
	it.it_value.tv_usec = ms % 1000 * 1000;
	sigaction(SIGALRM, &sa, NULL);
	t0 = now_ms();
	setitimer(ITIMER_REAL, &it, NULL);
	while (!stop) {
		fd = open(argv[1], O_RDONLY | O_NONBLOCK | O_CLOEXEC);
		if (fd < 0 || close(fd))
			failed++;
		calls++;
	}
	printf("{\"calls\":%llu,\"failed\":%llu,\"elapsed_ms\":%.3f}\n", calls, failed,
	       now_ms() - t0);
	return 0;
}
