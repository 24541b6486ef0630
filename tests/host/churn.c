/* A real program that changes its mappings and does I/O into its own memory while it is
 * monitored (tests/host/test_twins.py): for SECONDS it keeps a 16 MiB buffer busy with
 * read(2) from /dev/zero and write(2) to /dev/null straight into/out of it (syscalls that
 * would get EFAULT on a protected page), and over and over maps 4 MiB, writes it,
 * mprotects half of it read-only and back, checks it, and unmaps it. Prints "ok N" and exits 0 when
 * every call did what it should; exits 1 at the first one that did not.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 2.0;
    size_t big = 16 << 20, chunk = 64 << 10;
    char *buf = mmap(NULL, big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int zero = open("/dev/zero", O_RDONLY), null = open("/dev/null", O_WRONLY);
    if (buf == MAP_FAILED || zero < 0 || null < 0)
        return 1;
    memset(buf, 1, big);
    printf("%lx %zu %d\n", (unsigned long)buf, big, (int)getpid());
    fflush(stdout);
    unsigned long n = 0;
    double end = now() + secs;
    while (now() < end) {
        for (size_t o = 0; o < big; o += chunk) {
            if (read(zero, buf + o, chunk) != (ssize_t)chunk || write(null, buf + o, chunk) != (ssize_t)chunk) {
                perror("io");
                return 1;
            }
        }
        char *m = mmap(NULL, 4 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) {
            perror("mmap");
            return 1;
        }
        memset(m, 2, 4 << 20);
        if (mprotect(m, 2 << 20, PROT_READ) || mprotect(m, 2 << 20, PROT_READ | PROT_WRITE)) {
            perror("mprotect");
            return 1;
        }
        if (m[4096] != 2) {
            fprintf(stderr, "lost a write: %d\n", m[4096]);
            return 1;
        }
        m[8192] = 3;
        if (munmap(m, 4 << 20)) {
            perror("munmap");
            return 1;
        }
        n++;
    }
    printf("ok %lu\n", n);
    return 0;
}
