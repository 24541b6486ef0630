/* A real program that grows on command (tests/host/test_twin_spe.py): maps 8 MiB of
 * anonymous memory 2 MiB-aligned with MADV_HUGEPAGE, writes every page, prints its address
 * (hex); then, for each line read from stdin, maps, advises and writes another 8 MiB the
 * same way and prints its address. Exits at end of input.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>

#define PMD (2UL << 20)
#define SIZE (8UL << 20)

static char *area(void)
{
    char *raw = mmap(NULL, SIZE + PMD, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED)
        return NULL;
    char *p = (char *)(((uintptr_t)raw + PMD - 1) & ~(PMD - 1));
    madvise(p, SIZE, MADV_HUGEPAGE);
    for (unsigned long off = 0; off < SIZE; off += 4096)
        p[off] = 1;
    return p;
}

int main(void)
{
    char line[16];
    do {
        char *p = area();
        if (!p)
            return 1;
        printf("%lx\n", (unsigned long)p);
        fflush(stdout);
    } while (fgets(line, sizeof line, stdin));
    return 0;
}
