/* The project's own real workload for the twin tests and bench/bench_twins.py.
 *
 * touch SIZE_MB HOT_MB HINT SECONDS [BLOCK_KB [gate|fork]]
 *   maps SIZE_MB of anonymous memory 2 MiB-aligned, applies HINT (huge | nohuge | none)
 *   with madvise, writes every page once (HINT collapse: then MADV_COLLAPSEs it into host
 *   THPs, what the tracer does to the 2 MiB units it arms), prints "ADDR SIZE PID" (hex, decimal, decimal) and
 *   then, for
 *   SECONDS (0: until killed), keeps writing one byte per 4 KiB page of the first HOT_MB
 *   (a sweep), sleeping 1 ms after each sweep of BLOCK_KB (default: the whole hot part).
 *   The rest is never touched again. At the end it prints "sweeps N" (N sweeps of the hot
 *   part done) and "cpu S" (process CPU seconds, all threads, spent in the loop) and exits 0. With `gate`, it reads one byte from stdin before the loop
 *   (bench/twins_speed.py starts two copies at the same moment). With `fork`, it forks after
 *   writing the memory: the child prints the line (its own pid) and runs the loop, the parent
 *   waits for it.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double clk(clockid_t id)
{
    struct timespec t;
    clock_gettime(id, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}
static double now(void) { return clk(CLOCK_MONOTONIC); }

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: touch SIZE_MB HOT_MB huge|nohuge|none|collapse SECONDS [BLOCK_KB]\n");
        return 2;
    }
    size_t size = strtoull(argv[1], NULL, 0) << 20, hot = strtoull(argv[2], NULL, 0) << 20;
    double secs = atof(argv[4]);
    size_t block = argc > 5 && strtoull(argv[5], NULL, 0) ? strtoull(argv[5], NULL, 0) << 10 : hot;
    char *raw = mmap(NULL, size + (2 << 20), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED)
        return 1;
    char *p = (char *)(((uintptr_t)raw + (2 << 20) - 1) & ~(uintptr_t)((2 << 20) - 1));
    if (!strcmp(argv[3], "huge"))
        madvise(p, size, MADV_HUGEPAGE);
    else if (!strcmp(argv[3], "nohuge"))
        madvise(p, size, MADV_NOHUGEPAGE);
    for (size_t i = 0; i < size; i += 4096)
        p[i] = 1;
    if (!strcmp(argv[3], "collapse") && madvise(p, size, 25 /* MADV_COLLAPSE */) != 0)
        perror("madvise(MADV_COLLAPSE)");
    if (argc > 6 && !strcmp(argv[6], "fork")) {
        pid_t c = fork();
        if (c < 0)
            return 1;
        if (c > 0) {
            int st;
            waitpid(c, &st, 0);
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
    }
    printf("%lx %zu %d\n", (unsigned long)p, size, (int)getpid());
    fflush(stdout);
    if (argc > 6 && !strcmp(argv[6], "gate")) {
        char c;
        if (fread(&c, 1, 1, stdin) != 1)
            return 1;
    }
    struct timespec ms = {0, 1000000};
    double end = now() + secs, cpu0 = clk(CLOCK_PROCESS_CPUTIME_ID);
    unsigned long sweeps = 0;
    for (;;) {
        for (size_t b = 0; b < hot; b += block) {
            for (size_t i = b; i < b + block && i < hot; i += 4096)
                p[i]++;
            if (block < hot || secs <= 0)
                nanosleep(&ms, NULL);
        }
        sweeps++;
        if (secs > 0 && now() >= end)
            break;
    }
    printf("sweeps %lu cpu %.6f\n", sweeps, clk(CLOCK_PROCESS_CPUTIME_ID) - cpu0);
    return 0;
}
