/* damond's LD_PRELOAD access tracer for real programs (damond/host/tracing.py drives it).
 *
 * Loaded into every child of `damond exec` (LD_PRELOAD + DAMOND_TRACE_SOCK). A control
 * thread connects to the daemon's abstract unix socket, receives a shared slot table
 * (memfd, SCM_RIGHTS) and then, per DAMON sample, an ARM message: it restores the units
 * of the previous batch and mprotect(PROT_NONE)s the new ones (damon_va_mkold). The
 * first access to a protected unit raises SIGSEGV (SEGV_ACCERR); the handler restores
 * the unit's protection, records the unit as young with the fault address and returns,
 * so the access is re-executed (damon_va_young then reads the slot). Faults elsewhere go
 * to the program's own handler (sigaction/signal are interposed so ours stays first) or
 * the default action.
 *
 * Races kept right: mprotect/munmap/mremap/mmap(MAP_FIXED) are interposed; they first
 * restore and drop our units in the range and bump the table's map epoch (the daemon
 * re-reads /proc/PID/maps; a unit it asks for against an older epoch is armed only if no
 * mapping change since then touched it). read/write/pread/
 * pwrite/readv/writev/recv/recvfrom/send/sendto retry (up to 8 times) after an EFAULT caused by one
 * of our units (the kernel would have set the accessed bit: the unit is marked young);
 * read/write on regular files and /dev/zero-like devices and pread/pwrite also finish a copy
 * that stopped short at one of our units.
 * Thread stacks (pthread_create is interposed), each thread's TCB/rseq area (the kernel
 * writes it) and this library's own data are never armed. fork: the child restores every unit it inherited and connects anew (pthread_atfork).
 * Limits (documented in the README): static binaries are not traced; libc-internal I/O
 * (stdio buffers) and raw syscalls into an armed unit may see EFAULT; a handler the
 * program installs with a raw rt_sigaction syscall replaces ours.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <ucontext.h>
#include <unistd.h>

#define MAGIC 0x544d4144u          /* "DAMT" */
enum { FREE = 0, REQ, ARMING, PROT, YOUNG, DISARMING, RETIRED, FAILED };
enum { OP_ARM = 1 };

struct hdr {                       /* 128 bytes; layout mirrored in tracing.py */
    uint32_t magic, nslots;
    uint64_t epoch;                /* bumped by every interposed mapping change */
    uint64_t seq_done;             /* last ARM batch fully handled */
    uint64_t faults;               /* faults on our units */
    uint64_t restores;             /* protections we restored (handler + thread) */
    uint64_t efault_retries;
    uint64_t failed;               /* units we could not arm */
    uint64_t mapgen;               /* bumped by every interposed mapping call, new mmaps too */
    uint64_t advgen;               /* bumped by madvise(MADV_HUGEPAGE / MADV_NOHUGEPAGE) */
    uint64_t collapsed;            /* MADV_COLLAPSE calls that left a unit PMD-mapped */
    uint64_t pad[6];               /* 128 bytes */
};
struct slot {                      /* 32 bytes */
    uint64_t start, len, addr;
    uint32_t state, prot;          /* prot: the unit's PROT_* bits | HOST_THP */
};
#define PROT_MASK 0x7u
#define HOST_THP 0x80000000u       /* back the 2 MiB unit by a host THP before protecting it */
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
static int uprot(const struct slot *s) { return (int)(s->prot & PROT_MASK); }
struct msg { uint64_t seq, epoch; uint32_t n, op; };

static struct hdr *volatile g_hdr;
static struct slot *volatile g_slots;
static size_t g_map_len;
static int g_fd = -1;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static struct sigaction g_prev;    /* the program's SIGSEGV disposition */
static int g_installed;
static char g_sock[108];
/* slots that may be live: [g_lo[k], g_lo[k] + g_n[k]) of the two halves (set by arm()) */
static volatile uint32_t g_lo[2], g_n[2];
/* the ranges of the last RING mapping changes, by epoch: a unit the daemon asks for against
 * an older epoch is armed unless one of the changes since overlapped it */
#define RING 256
static struct { uint64_t ep; uintptr_t lo, hi; } g_ring[RING];

#define MAX_EXCL 1024
static struct { uintptr_t lo, hi; } g_excl[MAX_EXCL];
static int g_nexcl;
static pthread_mutex_t g_excl_mu = PTHREAD_MUTEX_INITIALIZER;

#define GUARDS 64
static struct { long tid; uintptr_t addr; uint64_t gen; } g_guard[GUARDS];

/* ---- raw syscalls: the handler must not touch errno or libc state ---------------------- */
static long raw3(long n, long a, long b, long c)
{
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}
static long raw_mprotect(uint64_t a, uint64_t l, int p) { return raw3(SYS_mprotect, (long)a, (long)l, p); }

#define REAL(ret, name, args)                                          \
    static ret(*real_##name) args;                                     \
    static void resolve_##name(void)                                   \
    {                                                                  \
        if (!real_##name)                                              \
            real_##name = (ret(*) args)dlsym(RTLD_NEXT, #name);        \
    }
REAL(int, mprotect, (void *, size_t, int))
REAL(int, madvise, (void *, size_t, int))
REAL(int, munmap, (void *, size_t))
REAL(void *, mmap, (void *, size_t, int, int, int, off_t))
REAL(void *, mremap, (void *, size_t, size_t, int, ...))
REAL(int, sigaction, (int, const struct sigaction *, struct sigaction *))
REAL(int, pthread_create, (pthread_t *, const pthread_attr_t *, void *(*)(void *), void *))
REAL(ssize_t, read, (int, void *, size_t))
REAL(ssize_t, write, (int, const void *, size_t))
REAL(ssize_t, pread, (int, void *, size_t, off_t))
REAL(ssize_t, pwrite, (int, const void *, size_t, off_t))
REAL(ssize_t, readv, (int, const struct iovec *, int))
REAL(ssize_t, writev, (int, const struct iovec *, int))
REAL(ssize_t, recv, (int, void *, size_t, int))
REAL(ssize_t, recvfrom, (int, void *, size_t, int, struct sockaddr *, socklen_t *))
REAL(ssize_t, send, (int, const void *, size_t, int))
REAL(ssize_t, sendto, (int, const void *, size_t, int, const struct sockaddr *, socklen_t))

/* A 2 MiB unit the twin maps with a PMD folio and the program has mostly populated (the
 * daemon decides, HOST_THP): collapse it into a host THP (MADV_COLLAPSE, independent of the
 * host's THP mode; a VM_NOHUGEPAGE mapping refuses), so protecting and restoring it rewrites
 * one PMD instead of 512 PTEs. Tried once per unit between mapping changes; raw syscall, so
 * the daemon does not see a madvise of the program's. */
#define THP_CACHE 1024
static struct { uintptr_t addr; uint64_t ep; } g_thp[THP_CACHE];
static void back_by_thp(struct hdr *h, uintptr_t a, uint64_t ep)
{
    unsigned i = (unsigned)((a >> 21) % THP_CACHE);
    if (g_thp[i].addr == a && g_thp[i].ep == ep)
        return;
    g_thp[i].addr = a, g_thp[i].ep = ep;
    if (raw3(SYS_madvise, (long)a, 2L << 20, MADV_COLLAPSE) == 0)
        __atomic_add_fetch(&h->collapsed, 1, __ATOMIC_RELAXED);
}

static int live(uint32_t st) { return st == ARMING || st == PROT || st == YOUNG || st == DISARMING; }

/* ---- the SIGSEGV handler --------------------------------------------------------------- */
static void chain(int sig, siginfo_t *info, void *uc)
{
    struct sigaction p = g_prev;
    if (p.sa_flags & SA_SIGINFO) {
        if (p.sa_sigaction) { p.sa_sigaction(sig, info, uc); return; }
    } else if (p.sa_handler != SIG_DFL && p.sa_handler != SIG_IGN) {
        p.sa_handler(sig);
        return;
    }
    /* default action: reinstate it and return; the access faults again and kills us */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    resolve_sigaction();
    real_sigaction(SIGSEGV, &dfl, NULL);
}

/* An access fault we cannot attribute may still be ours (a unit restored between the
 * fault and this handler): re-execute once per (thread, address, restore count). */
static int retry_once(uintptr_t addr)
{
    struct hdr *h = g_hdr;
    long tid = raw3(SYS_gettid, 0, 0, 0);
    uint64_t gen = h ? __atomic_load_n(&h->restores, __ATOMIC_ACQUIRE) : 0;
    int i = (int)(tid % GUARDS);
    if (g_guard[i].tid == tid && g_guard[i].addr == addr && g_guard[i].gen == gen)
        return 0;
    g_guard[i].tid = tid, g_guard[i].addr = addr, g_guard[i].gen = gen;
    return h != NULL;
}

/* The access was a store: bit 63 of a slot's addr (user addresses never have it), read by
 * the twins' SPE source (damond/host/twin_spe.py). x86-64 page-fault error code bit 1. */
#define ADDR_STORE (1ULL << 63)
static uint64_t store_bit(void *uc)
{
#if defined(__x86_64__)
    return (((ucontext_t *)uc)->uc_mcontext.gregs[REG_ERR] & 2) ? ADDR_STORE : 0;
#else
    (void)uc;
    return 0;
#endif
}

static void on_segv(int sig, siginfo_t *info, void *uc)
{
    struct hdr *h = g_hdr;
    struct slot *s = g_slots;
    uintptr_t a = (uintptr_t)info->si_addr;
    if (h && s && info->si_code == SEGV_ACCERR) {
        for (uint32_t i = 0; i < h->nslots; i++) {          /* a unit armed now: ours for sure */
            uint32_t k = i >= h->nslots / 2;
            if (i - g_lo[k] >= g_n[k]) {                    /* outside the used part of this half */
                i = k ? h->nslots : h->nslots / 2 - 1;
                continue;
            }
            uint32_t st = __atomic_load_n(&s[i].state, __ATOMIC_ACQUIRE);
            if (!live(st) || a < s[i].start || a - s[i].start >= s[i].len)
                continue;
            if (st == ARMING || st == PROT) {
                s[i].addr = a | store_bit(uc);
                if (__atomic_compare_exchange_n(&s[i].state, &st, YOUNG, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
                    __atomic_add_fetch(&h->faults, 1, __ATOMIC_RELAXED);
            }
            raw_mprotect(s[i].start, s[i].len, uprot(&s[i]));
            __atomic_add_fetch(&h->restores, 1, __ATOMIC_RELEASE);
            return;
        }
        /* none: a unit restored between the fault and now (or not ours at all) */
        if (retry_once(a))
            return;
    }
    chain(sig, info, uc);
}

static void install_handler(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    resolve_sigaction();
    if (real_sigaction(SIGSEGV, &sa, &g_prev) == 0)
        g_installed = 1;
}

/* ---- units vs the program's own mapping changes ---------------------------------------- */
/* Restore (if still ours) and drop every unit overlapping [a, a+len). Returns 1 if one was
 * armed (the EFAULT retry marks it young, as the kernel's access would have), 2 if one was
 * ours lately (restored meanwhile: an EFAULT from it is worth a retry), else 0. */
static int drop_units(uintptr_t a, size_t len, int mark_young)
{
    struct hdr *h = g_hdr;
    struct slot *s = g_slots;
    int hit = 0;
    if (!h || !s || !len)
        return 0;
    for (uint32_t i = 0; i < h->nslots; i++) {
        uint32_t k = i >= h->nslots / 2;
        if (i - g_lo[k] >= g_n[k]) {
            i = k ? h->nslots : h->nslots / 2 - 1;
            continue;
        }
        uint32_t st = __atomic_load_n(&s[i].state, __ATOMIC_ACQUIRE);
        if (s[i].start >= a + len || a >= s[i].start + s[i].len)
            continue;
        if (st == RETIRED) {
            hit |= 2;
            continue;
        }
        if (!live(st))
            continue;
        hit |= 2;
        if (st == ARMING || st == PROT) {
            hit = 1;
            if (mark_young) {
                s[i].addr = s[i].start > a ? s[i].start : a;
                if (__atomic_compare_exchange_n(&s[i].state, &st, YOUNG, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
                    __atomic_add_fetch(&h->faults, 1, __ATOMIC_RELAXED);
            }
        }
        raw_mprotect(s[i].start, s[i].len, uprot(&s[i]));
        __atomic_add_fetch(&h->restores, 1, __ATOMIC_RELEASE);
        if (!mark_young)
            __atomic_store_n(&s[i].state, FREE, __ATOMIC_RELEASE);
    }
    return hit & 1 ? 1 : hit;
}

static void map_change(uintptr_t a, size_t len)
{
    pthread_mutex_lock(&g_mu);
    drop_units(a, len, 0);
    if (g_hdr) {
        uint64_t ep = g_hdr->epoch + 1;
        g_ring[ep % RING].ep = ep, g_ring[ep % RING].lo = a, g_ring[ep % RING].hi = a + len;
        __atomic_store_n(&g_hdr->epoch, ep, __ATOMIC_RELEASE);
        __atomic_add_fetch(&g_hdr->mapgen, 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&g_mu);
}

int mprotect(void *a, size_t len, int prot)
{
    resolve_mprotect();
    map_change((uintptr_t)a, len);
    return real_mprotect(a, len, prot);
}

int madvise(void *a, size_t len, int advice)
{
    resolve_madvise();
    int r = real_madvise(a, len, advice);
    if (g_hdr) {
        if (advice == MADV_HUGEPAGE || advice == MADV_NOHUGEPAGE)
            __atomic_add_fetch(&g_hdr->advgen, 1, __ATOMIC_RELEASE);
        __atomic_add_fetch(&g_hdr->mapgen, 1, __ATOMIC_RELEASE);
    }
    return r;
}

int munmap(void *a, size_t len)
{
    resolve_munmap();
    map_change((uintptr_t)a, len);
    return real_munmap(a, len);
}

void *mmap(void *a, size_t len, int prot, int flags, int fd, off_t off)
{
    resolve_mmap();
    if (flags & MAP_FIXED)
        map_change((uintptr_t)a, len);
    void *r = real_mmap(a, len, prot, flags, fd, off);
    if (g_hdr)
        __atomic_add_fetch(&g_hdr->mapgen, 1, __ATOMIC_RELEASE);
    return r;
}
void *mmap64(void *a, size_t len, int prot, int flags, int fd, off_t off) __attribute__((alias("mmap")));

void *mremap(void *old, size_t old_len, size_t new_len, int flags, ...)
{
    void *new_addr = NULL;
    if (flags & MREMAP_FIXED) {
        va_list ap;
        va_start(ap, flags);
        new_addr = va_arg(ap, void *);
        va_end(ap);
        map_change((uintptr_t)new_addr, new_len);
    }
    resolve_mremap();
    map_change((uintptr_t)old, old_len);
    return real_mremap(old, old_len, new_len, flags, new_addr);
}

/* ---- sigaction/signal interposition: our handler stays first ---------------------------- */
int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    resolve_sigaction();
    if (sig != SIGSEGV || !g_installed)
        return real_sigaction(sig, act, old);
    if (old)
        *old = g_prev;
    if (act)
        g_prev = *act;
    return 0;
}

sighandler_t signal(int sig, sighandler_t fn)
{
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(sig, &sa, &old) < 0)
        return SIG_ERR;
    return old.sa_handler;
}

/* ---- EFAULT from syscalls into an armed unit: restore, mark young, retry once ----------- */
/* Protections restored so far (handler, control thread, mapping calls): a syscall that
 * began before a restore may have faulted on a unit that is gone from the table by the
 * time we look (its half reused by a later batch while this thread waited for a CPU). */
static uint64_t restores_now(void)
{
    return g_hdr ? __atomic_load_n(&g_hdr->restores, __ATOMIC_ACQUIRE) : 0;
}
/* After an EFAULT of a call that began when restores_now() was *gen: 1 or 2 (retry) if
 * one of our units in [buf, buf+n) was armed or restored since, else 0 (a real EFAULT).
 * *gen becomes the count to compare with after the retry. */
static int efault_fix(const void *buf, size_t n, uint64_t *gen)
{
    if (errno != EFAULT || !g_hdr)
        return 0;
    pthread_mutex_lock(&g_mu);
    int hit = drop_units((uintptr_t)buf, n, 1);
    pthread_mutex_unlock(&g_mu);
    if (!hit && restores_now() != *gen)
        hit = 2;
    *gen = restores_now();
    if (hit)
        __atomic_add_fetch(&g_hdr->efault_retries, 1, __ATOMIC_RELAXED);
    errno = EFAULT;
    return hit;
}
static int efault_fix_iov(const struct iovec *iov, int cnt, uint64_t *gen)
{
    int hit = 0;
    uint64_t g = *gen;
    for (int i = 0; i < cnt; i++) {
        uint64_t gi = g;
        hit |= efault_fix(iov[i].iov_base, iov[i].iov_len, &gi);
        *gen = gi;
    }
    return hit;
}
/* Retried while the EFAULT was ours: a new batch may re-arm the unit in between. */
#define MAX_RETRIES 8
#define RETRY(call, fix)                                        \
    uint64_t gen = restores_now();                              \
    ssize_t r = call;                                           \
    for (int t_ = 0; r < 0 && t_ < MAX_RETRIES && (fix); t_++)  \
        r = call;                                               \
    return r;

/* A copy that stopped at one of our units returns a short count, not EFAULT. Where a
 * second call just continues the first one (regular files, /dev/zero and friends), finish
 * it past the unit, as the kernel would have without our protection. */
static int continuable(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 && (S_ISREG(st.st_mode) || (S_ISCHR(st.st_mode) && major(st.st_rdev) == 1));
}
/* The rest of a copy that stopped short at `p`: 1 or 2 if one of our units there was armed
 * or restored since the call began (restores_now() was *gen), else 0. */
static int stopped_at_unit(const char *p, size_t left, uint64_t *gen)
{
    if (!g_hdr || !left)
        return 0;
    pthread_mutex_lock(&g_mu);
    int hit = drop_units((uintptr_t)p, left, 1);              /* the rest of the copy: it touches them all */
    pthread_mutex_unlock(&g_mu);
    if (!hit && restores_now() != *gen)
        hit = 2;
    *gen = restores_now();
    return hit;
}

enum { IO_READ, IO_WRITE, IO_PREAD, IO_PWRITE };
static ssize_t io_call(int op, int fd, char *b, size_t n, off_t o)
{
    switch (op) {
    case IO_READ: return real_read(fd, b, n);
    case IO_WRITE: return real_write(fd, b, n);
    case IO_PREAD: return real_pread(fd, b, n, o);
    default: return real_pwrite(fd, b, n, o);
    }
}
/* read/write/pread/pwrite with our units in the way: retry an EFAULT that was ours, and
 * finish a copy that stopped short at one of them where a second call continues the
 * first (pread/pwrite always, read/write on continuable descriptors). `b` is only read
 * for IO_WRITE/IO_PWRITE. */
static ssize_t io_retry(int op, int fd, char *b, size_t n, off_t o)
{
    uint64_t gen = restores_now();
    ssize_t r = io_call(op, fd, b, n, o);
    for (int t = 0; r < 0 && t < MAX_RETRIES && efault_fix(b, n, &gen); t++)
        r = io_call(op, fd, b, n, o);
    int positional = op == IO_PREAD || op == IO_PWRITE;
    for (int t = 0; r > 0 && (size_t)r < n && t < MAX_RETRIES && stopped_at_unit(b + r, n - r, &gen) &&
                    (positional || continuable(fd));) {
        ssize_t k = io_call(op, fd, b + r, n - r, o + r);
        if (k == 0 || (k < 0 && errno != EFAULT))
            break;
        if (k < 0)
            t++;                      /* re-armed meanwhile: restore again */
        else
            r += k;
    }
    return r;
}

ssize_t read(int fd, void *b, size_t n)
{
    resolve_read();
    return io_retry(IO_READ, fd, b, n, 0);
}
ssize_t write(int fd, const void *b, size_t n)
{
    resolve_write();
    return io_retry(IO_WRITE, fd, (char *)b, n, 0);
}
ssize_t pread(int fd, void *b, size_t n, off_t o)
{
    resolve_pread();
    return io_retry(IO_PREAD, fd, b, n, o);
}
ssize_t pwrite(int fd, const void *b, size_t n, off_t o)
{
    resolve_pwrite();
    return io_retry(IO_PWRITE, fd, (char *)b, n, o);
}
ssize_t pread64(int fd, void *b, size_t n, off_t o) __attribute__((alias("pread")));
ssize_t pwrite64(int fd, const void *b, size_t n, off_t o) __attribute__((alias("pwrite")));
ssize_t readv(int fd, const struct iovec *v, int c) { resolve_readv(); RETRY(real_readv(fd, v, c), efault_fix_iov(v, c, &gen)) }
ssize_t writev(int fd, const struct iovec *v, int c) { resolve_writev(); RETRY(real_writev(fd, v, c), efault_fix_iov(v, c, &gen)) }
ssize_t recv(int fd, void *b, size_t n, int f) { resolve_recv(); RETRY(real_recv(fd, b, n, f), efault_fix(b, n, &gen)) }
ssize_t recvfrom(int fd, void *b, size_t n, int f, struct sockaddr *sa, socklen_t *sl)
{
    resolve_recvfrom();
    RETRY(real_recvfrom(fd, b, n, f, sa, sl), efault_fix(b, n, &gen))
}
ssize_t send(int fd, const void *b, size_t n, int f) { resolve_send(); RETRY(real_send(fd, b, n, f), efault_fix(b, n, &gen)) }
ssize_t sendto(int fd, const void *b, size_t n, int f, const struct sockaddr *sa, socklen_t sl)
{
    resolve_sendto();
    RETRY(real_sendto(fd, b, n, f, sa, sl), efault_fix(b, n, &gen))
}

/* ---- never-armed ranges: thread stacks and our own data --------------------------------- */
static void excl_add(uintptr_t lo, uintptr_t hi)
{
    pthread_mutex_lock(&g_excl_mu);
    if (g_nexcl < MAX_EXCL)
        g_excl[g_nexcl].lo = lo, g_excl[g_nexcl].hi = hi, g_nexcl++;
    pthread_mutex_unlock(&g_excl_mu);
}
static void excl_del(uintptr_t lo)
{
    pthread_mutex_lock(&g_excl_mu);
    for (int i = 0; i < g_nexcl; i++)
        if (g_excl[i].lo == lo) {
            g_excl[i] = g_excl[--g_nexcl];
            break;
        }
    pthread_mutex_unlock(&g_excl_mu);
}
static int excluded(uintptr_t lo, uintptr_t hi)
{
    int r = 0;
    pthread_mutex_lock(&g_excl_mu);
    for (int i = 0; i < g_nexcl && !r; i++)
        r = lo < g_excl[i].hi && g_excl[i].lo < hi;
    pthread_mutex_unlock(&g_excl_mu);
    return r;
}
static void excl_self_stack(uintptr_t *lo)
{
    pthread_attr_t at;
    void *base;
    size_t sz;
    *lo = 0;
    if (pthread_getattr_np(pthread_self(), &at) == 0) {
        if (pthread_attr_getstack(&at, &base, &sz) == 0) {
            *lo = (uintptr_t)base;
            excl_add((uintptr_t)base, (uintptr_t)base + sz);
        }
        pthread_attr_destroy(&at);
    }
}

/* The thread's control block: the kernel writes it behind the program's back (the rseq area
 * on every return to user space, clear_child_tid at exit). A protected page there is not a
 * fault the handler sees: the kernel kills the program with SIGSEGV (SI_KERNEL). glibc keeps
 * struct pthread, its rseq area and the TCB within a few KiB of pthread_self() on x86-64
 * (TLS variant II) and arm64 (variant I): 8 KiB on each side covers both. */
static uintptr_t excl_self_tcb(void)
{
    uintptr_t p = (uintptr_t)pthread_self() & ~(uintptr_t)4095;
    uintptr_t lo = p > 8192 ? p - 8192 : 0;
    excl_add(lo, p + 4096 + 8192);
    return lo;
}

struct tramp { void *(*fn)(void *); void *arg; };
static void *trampoline(void *p)
{
    struct tramp t = *(struct tramp *)p;
    uintptr_t lo;
    free(p);
    excl_self_stack(&lo);
    uintptr_t tcb = excl_self_tcb();
    void *r = t.fn(t.arg);
    if (lo)
        excl_del(lo);
    excl_del(tcb);
    return r;
}

int pthread_create(pthread_t *th, const pthread_attr_t *at, void *(*fn)(void *), void *arg)
{
    resolve_pthread_create();
    struct tramp *t = malloc(sizeof *t);
    if (!t)
        return real_pthread_create(th, at, fn, arg);
    t->fn = fn, t->arg = arg;
    int r = real_pthread_create(th, at, trampoline, t);
    if (r)
        free(t);
    return r;
}

static int self_segments(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    uintptr_t me = (uintptr_t)data;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && me >= lo && me < lo + ph->p_memsz) {
            for (int j = 0; j < info->dlpi_phnum; j++) {
                const ElfW(Phdr) *q = &info->dlpi_phdr[j];
                if (q->p_type == PT_LOAD && (q->p_flags & PF_W)) {
                    uintptr_t a = (info->dlpi_addr + q->p_vaddr) & ~(uintptr_t)4095;
                    excl_add(a, info->dlpi_addr + q->p_vaddr + q->p_memsz + 4096);
                }
            }
            return 1;
        }
    }
    return 0;
}

/* ---- the control thread ----------------------------------------------------------------- */
static void restore_all(int mark_retired)
{
    struct hdr *h = g_hdr;
    struct slot *s = g_slots;
    if (!h || !s)
        return;
    for (uint32_t i = 0; i < h->nslots; i++) {
        uint32_t st = __atomic_load_n(&s[i].state, __ATOMIC_ACQUIRE);
        if (!live(st))
            continue;
        raw_mprotect(s[i].start, s[i].len, uprot(&s[i]));
        if (mark_retired)
            __atomic_store_n(&s[i].state, RETIRED, __ATOMIC_RELEASE);
    }
}

/* Whether a mapping change after epoch `seen` (up to `cur`) overlapped [lo, hi). */
static int changed_since(uint64_t seen, uint64_t cur, uintptr_t lo, uintptr_t hi)
{
    if (cur == seen)
        return 0;
    if (cur < seen || cur - seen >= RING)
        return 1;
    for (uint64_t e = seen + 1; e <= cur; e++)
        if (g_ring[e % RING].ep != e || (g_ring[e % RING].lo < hi && lo < g_ring[e % RING].hi))
            return 1;
    return 0;
}

static void arm(const struct msg *m)
{
    struct hdr *h = g_hdr;
    struct slot *s = g_slots;
    uint32_t half = h->nslots / 2, base = (uint32_t)(m->seq & 1) * half, other = half - base;
    uint32_t ko = other ? 1 : 0, kc = base ? 1 : 0;
    pthread_mutex_lock(&g_mu);
    for (uint32_t i = other; i < other + g_n[ko]; i++) {       /* the last batch's sample is over */
        uint32_t st = __atomic_load_n(&s[i].state, __ATOMIC_ACQUIRE);
        if (st == FAILED || st == REQ) {
            __atomic_store_n(&s[i].state, FREE, __ATOMIC_RELEASE);
            continue;
        }
        if (!live(st))
            continue;
        if (st == ARMING || st == PROT) {
            if (!__atomic_compare_exchange_n(&s[i].state, &st, DISARMING, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
                st = YOUNG;                                    /* touched meanwhile: restored by the handler */
            else
                raw_mprotect(s[i].start, s[i].len, uprot(&s[i]));
        }
        __atomic_add_fetch(&h->restores, 1, __ATOMIC_RELEASE);
        __atomic_store_n(&s[i].state, RETIRED, __ATOMIC_RELEASE);
    }
    uint64_t epoch = __atomic_load_n(&h->epoch, __ATOMIC_ACQUIRE);
    uint32_t n = m->n < half ? m->n : half;
    g_lo[kc] = base;
    g_n[kc] = n;                      /* REQ slots are ignored by the handler until armed */
    for (uint32_t i = base; i < base + n; i++) {
        if (__atomic_load_n(&s[i].state, __ATOMIC_ACQUIRE) != REQ)
            continue;
        if (changed_since(m->epoch, epoch, s[i].start, s[i].start + s[i].len) ||
            excluded(s[i].start, s[i].start + s[i].len)) {
            __atomic_store_n(&s[i].state, FAILED, __ATOMIC_RELEASE);
            h->failed++;
            continue;
        }
        if ((s[i].prot & HOST_THP) && s[i].len == (2u << 20) && !(s[i].start & ((2u << 20) - 1)))
            back_by_thp(h, s[i].start, epoch);
        __atomic_store_n(&s[i].state, ARMING, __ATOMIC_RELEASE);
        if (raw_mprotect(s[i].start, s[i].len, PROT_NONE) < 0) {
            __atomic_store_n(&s[i].state, FAILED, __ATOMIC_RELEASE);
            h->failed++;
            continue;
        }
        uint32_t st = ARMING;
        __atomic_compare_exchange_n(&s[i].state, &st, PROT, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    }
    __atomic_store_n(&h->seq_done, m->seq, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&g_mu);
}

static int recv_fd(int sock, uint32_t *nslots)
{
    char buf[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {nslots, sizeof *nslots};
    struct msghdr mh = {0};
    mh.msg_iov = &iov, mh.msg_iovlen = 1, mh.msg_control = buf, mh.msg_controllen = sizeof buf;
    if (recvmsg(sock, &mh, MSG_CMSG_CLOEXEC) != (ssize_t)sizeof *nslots)
        return -1;
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    if (!c || c->cmsg_type != SCM_RIGHTS)
        return -1;
    int fd;
    memcpy(&fd, CMSG_DATA(c), sizeof fd);
    return fd;
}

static void *control(void *unused)
{
    (void)unused;
    excl_self_tcb();                                           /* its stack: start_control */
    int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0)
        return NULL;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(g_sock);
    memcpy(sa.sun_path, g_sock, n);
    if (sa.sun_path[0] == '@')
        sa.sun_path[0] = 0;                                    /* abstract name */
    if (connect(sock, (struct sockaddr *)&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)) < 0)
        goto out;
    uint32_t hello[2] = {MAGIC, (uint32_t)getpid()};
    resolve_write();
    if (real_write(sock, hello, sizeof hello) != sizeof hello)
        goto out;
    uint32_t nslots;
    int fd = recv_fd(sock, &nslots);
    if (fd < 0)
        goto out;
    size_t len = sizeof(struct hdr) + (size_t)nslots * sizeof(struct slot);
    resolve_mmap();
    void *p = real_mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        goto out;
    excl_add((uintptr_t)p, (uintptr_t)p + len);
    g_map_len = len;
    g_slots = (struct slot *)((char *)p + sizeof(struct hdr));
    g_hdr = (struct hdr *)p;
    g_fd = sock;
    struct msg m;
    resolve_read();
    for (;;) {
        ssize_t r = real_read(sock, &m, sizeof m);
        if (r != sizeof m)
            break;
        if (m.op == OP_ARM)
            arm(&m);
    }
    pthread_mutex_lock(&g_mu);                                 /* daemon gone: leave nothing armed */
    restore_all(1);
    pthread_mutex_unlock(&g_mu);
out:
    close(sock);
    return NULL;
}

/* The control thread runs on a stack of ours and never calls malloc (everything it calls is
 * resolved here first): glibc gives a thread's first malloc (pthread_getattr_np's, say) an
 * arena of its own, a 64 MiB reservation that would change the program's layout and so the
 * initial vaddr regions DAMON derives from it (damon_va_three_regions). After fork the child
 * reuses the stack: the thread that ran on it exists only in the parent. */
#define CONTROL_STACK (256 << 10)
static void *g_ctl_stack;
static void start_control(void)
{
    pthread_t th;
    pthread_attr_t at;
    resolve_mmap();
    resolve_read();
    resolve_write();
    resolve_pthread_create();
    if (!g_ctl_stack) {
        void *stk = real_mmap(NULL, CONTROL_STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
        if (stk == MAP_FAILED)
            return;
        g_ctl_stack = stk;
        excl_add((uintptr_t)stk, (uintptr_t)stk + CONTROL_STACK);
    }
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstack(&at, g_ctl_stack, CONTROL_STACK);
    real_pthread_create(&th, &at, control, NULL);
    pthread_attr_destroy(&at);
}

static void before_fork(void) { pthread_mutex_lock(&g_mu); }
static void after_fork_parent(void) { pthread_mutex_unlock(&g_mu); }
static void after_fork_child(void)
{
    pthread_mutex_init(&g_mu, NULL);
    pthread_mutex_init(&g_excl_mu, NULL);
    restore_all(0);                   /* the table is the parent's: restore our copy, keep its states */
    g_slots = NULL;
    g_hdr = NULL;
    if (g_fd >= 0)
        close(g_fd);
    g_fd = -1;
    start_control();
}

__attribute__((constructor)) static void init(void)
{
    const char *s = getenv("DAMOND_TRACE_SOCK");
    if (!s || !*s || strlen(s) >= sizeof g_sock)
        return;
    strcpy(g_sock, s);
    dl_iterate_phdr(self_segments, (void *)&init);
    uintptr_t lo;
    excl_self_stack(&lo);             /* the main thread's stack ([stack] is skipped daemon-side too) */
    excl_self_tcb();                  /* the main thread's TCB and rseq area (ld.so's anonymous memory) */
    install_handler();
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);
    start_control();
}
