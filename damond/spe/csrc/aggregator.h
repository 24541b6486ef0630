/*
 * The Aggregator object shared by aggregator.c (state, feed, the type) and
 * aggregator_ops.c (the batch methods: keys, apply, undo, learn, fold, forget, clear).
 */
#ifndef DAMOND_SPE_AGGREGATOR_H
#define DAMOND_SPE_AGGREGATOR_H
#include "feedparse.h"

#define ROW_CNT 0x80000000u
#define ROW_KEY(w) (((w) & ~ROW_CNT) >> 9)
#define ROW_SUB(w) ((w) & 511u)
#define DELTA_MAX 65535u        /* a slot's deltas sum to at most this (folded before) */
typedef uint16_t delta_t;
#define ROW_COUNT(a, i) (((a)->row[i] & ROW_CNT) ? (a)->rcnt[i] : 1)

typedef struct {
    PyObject_HEAD
    Py_ssize_t max_rows, n_rows, n_keys;
    uint64_t tmask;               /* key table size - 1 */
    int32_t *ktab;                /* -1 empty, else index into keys */
    uint32_t *row;                /* per row: key index << 9 | subpage, ROW_CNT: count in rcnt */
    uint64_t *rcnt;               /* per row with ROW_CNT: its count (else 1) */
    uint64_t *key, *klines, *kacc;
    uint32_t *kpos;               /* table positions filled (to clear), n_kt of them */
    Py_ssize_t n_kt;
    int64_t *kslot;               /* per key: tree slot it was added to during feed, or -1 */
#define KCACHE 1024
#define CKEY_NONE 1               /* never a THP key (those are multiples of 512) */
    uint64_t ckey[KCACHE];        /* direct-mapped cache THP key -> key index (CKEY_NONE: empty) */
    int32_t ckidx[KCACHE];
    int64_t cslot[KCACHE];        /* kslot of the cached key (undo resets both) */
    uint64_t *total;              /* the tree's totals and last-update stamps during one feed */
    int64_t *last, now;
    int64_t *kold;                /* per direct key: its last stamp before this batch */
    uint64_t acc_all;             /* sum of counts of all rows (mod 2**64) */
    Py_ssize_t flushed;           /* rows whose direct adds are done */
    Py_ssize_t n_direct;
    /* persistent map THP key -> tree slot (learned after each batch), for direct adds */
    Py_ssize_t map_cap, map_n;
    uint64_t map_mask;
    int32_t *mtab;
    uint64_t *mkey;
    int64_t *mslot;
    int busy;                     /* a feed is running without the GIL */
    /* per-slot small deltas of the direct adds, folded into the u64 counters by fold() */
    Py_ssize_t delta_rows, n_dirty;
    delta_t *delta;               /* [delta_rows, 512]: added since the slot's last fold */
    uint32_t *dsum;               /* per slot: sum of its deltas (bounds each, <= DELTA_MAX) */
    int32_t *dirty;               /* slots with deltas since the last fold() */
    uint8_t *indirty;
    uint64_t *counts;             /* the tree's counters during one feed (NULL: no direct adds) */
    Py_ssize_t counts_rows;
} Aggregator;

/* Methods other than feed must not run while a feed scans without the GIL. */
#define AGG_IDLE_OR_FAIL(a, ret)                                                  \
    do {                                                                          \
        if ((a)->busy) {                                                          \
            PyErr_SetString(PyExc_RuntimeError, "Aggregator in use by another thread"); \
            return ret;                                                           \
        }                                                                         \
    } while (0)

static inline uint64_t hash64(uint64_t x)
{
    x ^= x >> 29;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 32;
    return x;
}


/* counts[s] += delta[s]; delta[s] = 0 (the slot stays on the dirty list). */
static inline void fold_slot(uint64_t *restrict counts, delta_t *restrict delta, uint32_t *restrict dsum, int64_t s)
{
    uint64_t *c = counts + s * 512;
    delta_t *d = delta + s * 512;
    int j;

    if (dsum[s] == 0)
        return;
    for (j = 0; j < 512; j++)
        c[j] += d[j];
    memset(d, 0, 512 * sizeof(delta_t));
    dsum[s] = 0;
}

int get_buf(PyObject *o, Py_buffer *b, int flags, Py_ssize_t need, const char *name);
void agg_reset(Aggregator *a);
PyObject *agg_keys(Aggregator *a, PyObject *args);
PyObject *agg_apply(Aggregator *a, PyObject *args);
PyObject *agg_undo(Aggregator *a, PyObject *args);
PyObject *agg_learn(Aggregator *a, PyObject *args);
PyObject *agg_fold(Aggregator *a, PyObject *args);
PyObject *agg_forget(Aggregator *a, PyObject *noargs);
PyObject *agg_clear(Aggregator *a, PyObject *noargs);
#endif
