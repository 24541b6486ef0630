/* The project's own sparse/dense THP workload for the twins' SPE tests (test_twin_spe.py).
 *
 * thpmix NR_THPS STRIDE
 *   maps two areas of NR_THPS x 2 MiB each, 2 MiB-aligned, MADV_HUGEPAGE, with an unmapped
 *   2 MiB hole between them (two VMAs), writes every page of both once, prints
 *   "SPARSE DENSE SIZE PID" (hex, hex, decimal, decimal) and then, until killed, keeps
 *   writing one byte at offset 64 of every STRIDE-th 4 KiB page of the sparse area and of
 *   every page of the dense area. No other page of either area is touched after the
 *   first write.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define PMD (2UL << 20)
#define PAGE 4096UL

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: thpmix NR_THPS STRIDE\n");
        return 2;
    }
    unsigned long n = strtoul(argv[1], NULL, 0), stride = strtoul(argv[2], NULL, 0);
    unsigned long size = n * PMD;
    if (!n || !stride)
        return 2;
    char *raw = mmap(NULL, 2 * size + 3 * PMD, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    char *sparse = (char *)(((uintptr_t)raw + PMD - 1) & ~(PMD - 1));
    char *dense = sparse + size + PMD;
    if (munmap(sparse + size, PMD) || madvise(sparse, size, MADV_HUGEPAGE) || madvise(dense, size, MADV_HUGEPAGE)) {
        perror("munmap/madvise");
        return 1;
    }
    for (unsigned long off = 0; off < size; off += PAGE)
        sparse[off] = dense[off] = 1;
    printf("%lx %lx %lu %d\n", (unsigned long)sparse, (unsigned long)dense, size, (int)getpid());
    fflush(stdout);
    for (unsigned char v = 0;; v++) {
        for (unsigned long off = 0; off < size; off += stride * PAGE)
            ((volatile char *)sparse)[off + 64] = v;
        for (unsigned long off = 0; off < size; off += PAGE)
            ((volatile char *)dense)[off + 64] = v;
    }
}
