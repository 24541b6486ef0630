/* The project's own program for the twin tests: shared memory of a file.
 *
 * shmfile PATH SIZE_MB
 *   creates PATH with SIZE_MB, maps it MAP_SHARED, writes every 4 KiB page once, prints
 *   "ADDR SIZE PID" (hex, decimal, decimal) and sleeps until killed.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: shmfile PATH SIZE_MB\n");
        return 2;
    }
    size_t size = strtoull(argv[2], NULL, 0) << 20;
    int fd = open(argv[1], O_RDWR | O_CREAT, 0644);
    if (fd < 0 || ftruncate(fd, (off_t)size))
        return 1;
    volatile char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return 1;
    for (size_t i = 0; i < size; i += 4096)
        p[i] = 1;
    printf("%lx %zu %d\n", (unsigned long)p, size, (int)getpid());
    fflush(stdout);
    for (;;)
        pause();
}
