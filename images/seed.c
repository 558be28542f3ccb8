// SPDX-License-Identifier: GPL-2.0
/*
 * seed - make a guest restored from a snapshot a fresh one.
 *
 * Every guest restored from one snapshot wakes up with the same kernel random
 * state and the clock of the moment it was saved.  Writing to /dev/urandom
 * would only mix bytes into the input pool: the crng keeps its key until its
 * next scheduled reseed, so two guests would still read the same bytes.  So:
 * RNDADDENTROPY with the host's bytes, credited, then RNDRESEEDCRNG to rekey
 * the crng from the pool at once; then the wall clock from the host.
 *
 * usage: seed HEX SECONDS NANOSECONDS   (HEX: 32 to 512 bytes from the host)
 * Runs before the guest's first SSH login (init reads the line from the
 * serial console), so the SSH server's randomness is fresh too.
 * Built static on the host, like the racer.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define MAX_SEED 512

struct seed_entropy {
	struct rand_pool_info info;
	unsigned char buf[MAX_SEED];
};

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

static int parse_hex(const char *hex, unsigned char *out, size_t max)
{
	size_t len = strlen(hex), i;

	if (len % 2 || len / 2 > max || len / 2 < 32)
		return -1;
	for (i = 0; i < len / 2; i++) {
		int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -1;
		out[i] = hi << 4 | lo;
	}
	return len / 2;
}

int main(int argc, char **argv)
{
	struct seed_entropy e;
	struct timespec ts;
	int n, fd;

	if (argc != 4) {
		fprintf(stderr, "usage: seed HEX SECONDS NANOSECONDS\n");
		return 2;
	}
	n = parse_hex(argv[1], e.buf, sizeof(e.buf));
	if (n < 0) {
		fprintf(stderr, "seed: bad hex seed (32 to %d bytes)\n", MAX_SEED);
		return 2;
	}
	e.info.entropy_count = n * 8;
	e.info.buf_size = n;
	fd = open("/dev/urandom", O_RDWR | O_CLOEXEC);
	if (fd < 0 || ioctl(fd, RNDADDENTROPY, &e) < 0) {
		perror("seed: RNDADDENTROPY");
		return 1;
	}
	if (ioctl(fd, RNDRESEEDCRNG) < 0) {
		perror("seed: RNDRESEEDCRNG");
		return 1;
	}
	close(fd);
	ts.tv_sec = strtoll(argv[2], NULL, 10);
	ts.tv_nsec = strtol(argv[3], NULL, 10);
	if (clock_settime(CLOCK_REALTIME, &ts) < 0) {
		perror("seed: clock_settime");
		return 1;
	}
	return 0;
}
