/* The project's own program for the twin tests: a thread whose control block sits in
 * ld.so's anonymous memory (the main thread's, as in every program).
 *
 * tcb SECONDS
 *   prints "ADDR PID" (hex page address of pthread_self(), decimal pid), then for SECONDS
 *   keeps writing its own thread-local counter and a heap buffer and yielding the CPU (each
 *   return to user space makes the kernel write the thread's rseq area), prints
 *   "ok N" (loop count) and exits 0.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static __thread volatile unsigned long counter;

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 1;
    char *buf = malloc(1 << 16);
    struct timespec t0, t;
    printf("%lx %d\n", (unsigned long)((uintptr_t)pthread_self() & ~(uintptr_t)4095), (int)getpid());
    fflush(stdout);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        counter++;
        memset(buf, (int)counter, 1 << 16);
        sched_yield();
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 < secs);
    printf("ok %lu\n", counter);
    return 0;
}
