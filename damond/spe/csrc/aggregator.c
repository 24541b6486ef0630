/*
 * damond.spe._feedparse.Aggregator: the spe_feed hot path (damond/spe/feed.py `Ingest`;
 * the fallback there is parse_py + PfnTree.record_many, with identical results).
 *
 * Aggregator(max_rows=32768, map_capacity=1024): `feed(data)` parses lines exactly as `parse` does and, in the same pass, sums lines and counts per distinct THP key
 * (pfn & ~511, a small open-addressing hash table; keys in order of first appearance)
 * and keeps one row (key index, subpage, count) per recorded line. It stops before a
 * line when max_rows rows are held and returns (consumed, n_ok, n_malformed, n_zero).
 * `keys(keys, key_lines, key_acc)` copies the per-key sums out (uint64 arrays) and
 * returns their number; the caller maps keys to tree slots (-1: dropped) and
 * `apply(counts, slots)` adds the rows into counts[slot, subpage] (a C-contiguous
 * uint64 [n, 512] array) and resets. Counts add modulo 2**64, as numpy's uint64 does.
 * Direct adds: `learn(keys, slots)` remembers where keys live in the tree; `feed(data,
 * counts, total, last, now)` then adds the lines of remembered keys straight into the
 * tree's counters (counts[slot, sub], total[slot], last[slot] = now; apply skips them).
 * When every key of a batch was direct (`n_direct == n_keys`) the batch is done. The
 * caller must `forget()` when the tree's layout changes, and `undo(counts, total, last)`
 * (exact: subtracts, restores the old stamps) to take the general path instead.
 * feed() releases the GIL while it scans and adds: the caller must hold the tree's mutex
 * (no other thread may move or resize counts/total/last meanwhile) and must not use the
 * same Aggregator from two threads (a second call while one runs raises RuntimeError).
 */
#define _GNU_SOURCE
#include "feedparse.h"

#define ROW_CNT 0x80000000u
#define ROW_KEY(w) (((w) & ~ROW_CNT) >> 9)
#define ROW_SUB(w) ((w) & 511u)
#define DELTA_MAX 255u
#define ROW_COUNT(a, i) (((a)->row[i] & ROW_CNT) ? (a)->rcnt[i] : 1)

typedef struct {
    PyObject_HEAD
    Py_ssize_t max_rows, n_rows, n_keys;
    uint64_t tmask;               /* key table size - 1 */
    int32_t *ktab;                /* -1 empty, else index into keys */
    uint32_t *row;                /* per row: key index << 9 | subpage, ROW_CNT: count in rcnt */
    uint64_t *rcnt;               /* per row with ROW_CNT: its count (else 1) */
    uint64_t *key, *klines, *kacc;
    uint32_t *kpos;               /* table position of each key (to clear) */
    int64_t *kslot;               /* per key: tree slot it was added to during feed, or -1 */
#define KCACHE 1024
    uint64_t ckey[KCACHE];        /* direct-mapped cache THP key -> key index (ckidx -1: empty) */
    int32_t ckidx[KCACHE];
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
    uint8_t *delta;               /* [delta_rows, 512]: added since the slot's last fold */
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

static void agg_free_buffers(Aggregator *a)
{
    PyMem_Free(a->ktab); PyMem_Free(a->row); PyMem_Free(a->rcnt);
    PyMem_Free(a->key); PyMem_Free(a->klines); PyMem_Free(a->kacc); PyMem_Free(a->kpos);
    PyMem_Free(a->kold); a->kold = NULL;
    PyMem_Free(a->kslot); PyMem_Free(a->mtab); PyMem_Free(a->mkey); PyMem_Free(a->mslot);
    PyMem_Free(a->delta); PyMem_Free(a->dsum); PyMem_Free(a->dirty); PyMem_Free(a->indirty);
    a->delta = a->indirty = NULL;
    a->dsum = NULL;
    a->dirty = NULL;
    a->delta_rows = a->n_dirty = 0;
    a->kslot = a->mslot = NULL;
    a->mtab = NULL;
    a->mkey = NULL;
    a->ktab = NULL;
    a->row = NULL;
    a->rcnt = a->key = a->klines = a->kacc = NULL;
    a->kpos = NULL;
}

static void agg_reset(Aggregator *a)
{
    Py_ssize_t i;
    for (i = 0; i < a->n_keys; i++)
        a->ktab[a->kpos[i]] = -1;
    for (i = 0; i < KCACHE; i++)
        a->ckidx[i] = -1;
    a->n_rows = a->n_keys = a->n_direct = a->flushed = 0;
    a->acc_all = 0;
}

static int agg_init(Aggregator *a, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"max_rows", "map_capacity", NULL};
    Py_ssize_t maxr = 32768, mapc = 1024, tsize = 2, msize = 2, i;

    AGG_IDLE_OR_FAIL(a, -1);

    if (!PyArg_ParseTupleAndKeywords(args, kw, "|nn", kwlist, &maxr, &mapc))
        return -1;
    if (maxr < 1 || maxr > (1 << 22) || mapc < 1 || mapc > (1 << 24)) {
        PyErr_SetString(PyExc_ValueError, "max_rows must be 1..2**22, map_capacity 1..2**24");
        return -1;
    }
    while (tsize < 2 * maxr)
        tsize <<= 1;
    while (msize < 2 * mapc)
        msize <<= 1;
    if (a->n_dirty) {
        PyErr_SetString(PyExc_RuntimeError, "deltas pending: fold() before re-initialising");
        return -1;
    }
    agg_free_buffers(a);
    a->max_rows = maxr;
    a->tmask = (uint64_t)tsize - 1;
    a->ktab = PyMem_Malloc(tsize * sizeof(int32_t));
    a->row = PyMem_Malloc(maxr * sizeof(uint32_t));
    a->rcnt = PyMem_Malloc(maxr * sizeof(uint64_t));
    a->key = PyMem_Malloc(maxr * sizeof(uint64_t));
    a->klines = PyMem_Malloc(maxr * sizeof(uint64_t));
    a->kacc = PyMem_Malloc(maxr * sizeof(uint64_t));
    a->kpos = PyMem_Malloc(maxr * sizeof(uint32_t));
    a->kslot = PyMem_Malloc(maxr * sizeof(int64_t));
    a->kold = PyMem_Malloc(maxr * sizeof(int64_t));
    a->map_cap = mapc;
    a->map_mask = (uint64_t)msize - 1;
    a->mtab = PyMem_Malloc(msize * sizeof(int32_t));
    a->mkey = PyMem_Malloc(mapc * sizeof(uint64_t));
    a->mslot = PyMem_Malloc(mapc * sizeof(int64_t));
    if (!a->ktab || !a->row || !a->rcnt || !a->key || !a->klines || !a->kacc || !a->kpos
        || !a->kslot || !a->kold || !a->mtab || !a->mkey || !a->mslot) {
        agg_free_buffers(a);
        PyErr_NoMemory();
        return -1;
    }
    for (i = 0; i < tsize; i++)
        a->ktab[i] = -1;
    for (i = 0; i < msize; i++)
        a->mtab[i] = -1;
    a->map_n = 0;
    a->counts = NULL;
    a->n_keys = 0;
    agg_reset(a);
    return 0;
}

static void agg_dealloc(Aggregator *a)
{
    agg_free_buffers(a);
    Py_TYPE(a)->tp_free((PyObject *)a);
}

/* The key index of THP key k in this batch, creating it (and looking up the tree slot for
 * direct adds) on first sight; the caller has missed the direct-mapped cache. */
static __attribute__((noinline)) Py_ssize_t agg_key(Aggregator *a, uint64_t k)
{
    uint64_t h;
    int32_t j;
    unsigned c = (unsigned)(k >> 9) & (KCACHE - 1);

    h = hash64(k >> 9) & a->tmask;
    while ((j = a->ktab[h]) >= 0) {
        if (a->key[j] == k)
            goto found;
        h = (h + 1) & a->tmask;
    }
    j = (int32_t)a->n_keys++;
    a->ktab[h] = j;
    a->kpos[j] = (uint32_t)h;
    a->key[j] = k;
    a->kslot[j] = -1;
    if (a->counts != NULL && a->map_n) {
        int32_t m;
        uint64_t g = hash64(k >> 9) & a->map_mask;
        while ((m = a->mtab[g]) >= 0) {
            if (a->mkey[m] == k) {
                int64_t s = a->mslot[m];
                if (s >= 0 && s < a->counts_rows) {
                    a->kslot[j] = s;
                    a->kold[j] = a->last[s];
                    a->last[s] = a->now;
                    a->n_direct++;
                }
                break;
            }
            g = (g + 1) & a->map_mask;
        }
    }
found:
    a->ckey[c] = k;
    a->ckidx[c] = j;
    return j;
}

static int get_buf(PyObject *o, Py_buffer *b, int flags, Py_ssize_t need, const char *name)
{
    if (PyObject_GetBuffer(o, b, flags | PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    if (b->len < need) {
        PyBuffer_Release(b);
        PyErr_Format(PyExc_ValueError, "%s: array too small", name);
        return -1;
    }
    return 0;
}

/* One recorded line: per-key sums and a row (agg_flush_direct adds it to the tree). */
static inline __attribute__((always_inline)) void agg_row(Aggregator *a, uint64_t pfn, uint64_t cnt)
{
    uint64_t k = pfn & ~(uint64_t)511;
    unsigned c = (unsigned)(k >> 9) & (KCACHE - 1);
    Py_ssize_t kidx = (a->ckidx[c] >= 0 && a->ckey[c] == k) ? a->ckidx[c] : agg_key(a, k);
    Py_ssize_t r = a->n_rows;
    unsigned sub = (unsigned)(pfn & 511);

    a->n_rows = r + 1;
    a->acc_all += cnt;
    if (cnt == 1) {
        a->row[r] = (uint32_t)kidx << 9 | sub;
    } else {
        a->row[r] = ROW_CNT | (uint32_t)kidx << 9 | sub;
        a->rcnt[r] = cnt;
    }
}

/* Per-key lines and summed counts of the rows held (computed when needed, not per line). */
static void agg_sums(Aggregator *a)
{
    Py_ssize_t i;

    memset(a->klines, 0, a->n_keys * sizeof(uint64_t));
    memset(a->kacc, 0, a->n_keys * sizeof(uint64_t));
    for (i = 0; i < a->n_rows; i++) {
        uint32_t k = ROW_KEY(a->row[i]);
        a->klines[k] += 1;
        a->kacc[k] += ROW_COUNT(a, i);
    }
}

/* counts[s] += delta[s]; delta[s] = 0 (the slot stays on the dirty list). */
static void fold_slot(uint64_t *restrict counts, uint8_t *restrict delta, uint32_t *restrict dsum, int64_t s)
{
    uint64_t *c = counts + s * 512;
    uint8_t *d = delta + s * 512;
    int j;

    if (dsum[s] == 0)
        return;
    for (j = 0; j < 512; j++)
        c[j] += d[j];
    memset(d, 0, 512);
    dsum[s] = 0;
}

/* Size the deltas for a counters array of `rows` rows (they must be folded if it changed). */
static int delta_size(Aggregator *a, Py_ssize_t rows)
{
    if (rows == a->delta_rows)
        return 0;
    if (a->n_dirty) {
        PyErr_SetString(PyExc_RuntimeError, "the counters changed size with deltas pending: fold() first");
        return -1;
    }
    PyMem_Free(a->delta); PyMem_Free(a->dsum); PyMem_Free(a->dirty); PyMem_Free(a->indirty);
    a->delta = PyMem_Calloc(rows * 512, 1);
    a->dsum = PyMem_Calloc(rows, sizeof(uint32_t));
    a->dirty = PyMem_Calloc(rows, sizeof(int32_t));
    a->indirty = PyMem_Calloc(rows, 1);
    a->delta_rows = rows;
    if (!a->delta || !a->dsum || !a->dirty || !a->indirty) {
        PyMem_Free(a->delta); PyMem_Free(a->dsum); PyMem_Free(a->dirty); PyMem_Free(a->indirty);
        a->delta = a->indirty = NULL;
        a->dsum = NULL;
        a->dirty = NULL;
        a->delta_rows = 0;
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* The direct adds of the rows fed since the last flush, in a tight loop that prefetches
 * ahead: the counters are spread over megabytes, so overlapping the misses matters. */
static void agg_flush_direct(Aggregator *a)
{
    uint64_t *restrict counts = a->counts, *restrict total = a->total;
    uint8_t *restrict delta = a->delta;
    uint32_t *restrict dsum = a->dsum;
    const int64_t *restrict kslot = a->kslot;
    const uint32_t *restrict row = a->row;
    Py_ssize_t i, n = a->n_rows;
    enum { AHEAD = 16 };

    if (counts == NULL || a->n_direct == 0) {
        a->flushed = n;
        return;
    }
    for (i = a->flushed; i < n; i++) {
        int64_t s;
        if (i + AHEAD < n) {
            uint32_t w = row[i + AHEAD];
            int64_t t = kslot[ROW_KEY(w)];
            if (t >= 0)
                __builtin_prefetch(&delta[t * 512 + ROW_SUB(w)], 1);
        }
        s = kslot[ROW_KEY(row[i])];
        if (s >= 0) {
            uint64_t c = ROW_COUNT(a, i);
            total[s] += c;
            if (c > DELTA_MAX - dsum[s]) {
                if (c > DELTA_MAX) {           /* a big histogram count: straight in */
                    counts[s * 512 + ROW_SUB(row[i])] += c;
                    continue;
                }
                fold_slot(counts, delta, dsum, s);
            }
            if (!a->indirty[s]) {
                a->indirty[s] = 1;
                a->dirty[a->n_dirty++] = (int32_t)s;
            }
            dsum[s] += (uint32_t)c;
            delta[s * 512 + ROW_SUB(row[i])] += (uint8_t)c;
        }
    }
    a->flushed = n;
}

static PyObject *agg_feed(Aggregator *a, PyObject *args)
{
    Py_buffer data, cb, tb, lb;
    PyObject *counts = Py_None, *total = Py_None, *last = Py_None;
    long long now = 0;
    Py_ssize_t n_ok = 0, n_bad = 0, n_zero = 0, consumed, i;
    const unsigned char *p, *end;

    if (!PyArg_ParseTuple(args, "y*|OOOL", &data, &counts, &total, &last, &now))
        return NULL;
    if (a->ktab == NULL || a->busy) {
        PyBuffer_Release(&data);
        PyErr_SetString(PyExc_RuntimeError, a->busy ? "Aggregator in use by another thread"
                                                    : "Aggregator not initialised");
        return NULL;
    }
    a->counts = NULL;
    if (counts != Py_None) {
        if (get_buf(counts, &cb, PyBUF_WRITABLE, 0, "counts") < 0) {
            PyBuffer_Release(&data);
            return NULL;
        }
        a->counts_rows = cb.len / (512 * 8);
        if (get_buf(total, &tb, PyBUF_WRITABLE, a->counts_rows * 8, "total") < 0) {
            PyBuffer_Release(&data); PyBuffer_Release(&cb);
            return NULL;
        }
        if (get_buf(last, &lb, PyBUF_WRITABLE, a->counts_rows * 8, "last") < 0) {
            PyBuffer_Release(&data); PyBuffer_Release(&cb); PyBuffer_Release(&tb);
            return NULL;
        }
        if (delta_size(a, a->counts_rows) < 0) {
            PyBuffer_Release(&data); PyBuffer_Release(&cb); PyBuffer_Release(&tb); PyBuffer_Release(&lb);
            return NULL;
        }
        a->counts = cb.buf;
        a->total = tb.buf;
        a->last = lb.buf;
        a->now = now;
    }
    for (i = 0; i < a->n_keys; i++) {      /* a batch's direct keys need the same counts each feed */
        if (a->kslot[i] >= 0 && (a->counts == NULL || a->kslot[i] >= a->counts_rows)) {
            PyBuffer_Release(&data);
            if (a->counts != NULL) {
                PyBuffer_Release(&cb); PyBuffer_Release(&tb); PyBuffer_Release(&lb);
            }
            a->counts = NULL;
            PyErr_SetString(PyExc_ValueError, "this batch adds directly: pass the same counters");
            return NULL;
        }
    }
    p = data.buf;
    end = p + data.len;
    a->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    while (p < end && a->n_rows < a->max_rows) {
        const unsigned char *nl, *e, *f;
        uint64_t pfn, cnt;
        int has_count = 0;

        if ((f = fast_line(p, end, &pfn, &cnt, &has_count)) != NULL) {
            if (pfn == 0) {
                n_zero++;
            } else {
                agg_row(a, pfn, cnt);
                n_ok++;
            }
            p = f;
            continue;
        }
        nl = memchr(p, '\n', (size_t)(end - p));
        e = nl ? nl : end;
        if (!parse_line(p, e, &pfn, &cnt, &has_count)) {
            n_bad++;
        } else if (pfn == 0) {
            n_zero++;
        } else {
            agg_row(a, pfn, cnt);
            n_ok++;
        }
        p = nl ? nl + 1 : end;
    }
    agg_flush_direct(a);
    Py_END_ALLOW_THREADS
    a->busy = 0;
    consumed = (Py_ssize_t)(p - (const unsigned char *)data.buf);
    PyBuffer_Release(&data);
    if (a->counts != NULL) {
        PyBuffer_Release(&cb); PyBuffer_Release(&tb); PyBuffer_Release(&lb);
        a->counts = NULL;
    }
    return Py_BuildValue("nnnn", consumed, n_ok, n_bad, n_zero);
}

static PyObject *agg_keys(Aggregator *a, PyObject *args)
{
    PyObject *o[3];
    Py_buffer b[3];
    static const char *names[3] = {"keys", "key_lines", "key_acc"};
    uint64_t *src[3];
    Py_ssize_t nk = a->n_keys;
    int got, i;

    AGG_IDLE_OR_FAIL(a, NULL);

    if (!PyArg_ParseTuple(args, "OOO", &o[0], &o[1], &o[2]))
        return NULL;
    agg_sums(a);
    src[0] = a->key; src[1] = a->klines; src[2] = a->kacc;
    for (got = 0; got < 3; got++)
        if (get_buf(o[got], &b[got], PyBUF_WRITABLE, nk * 8, names[got]) < 0)
            goto fail;
    for (i = 0; i < 3; i++) {
        memcpy(b[i].buf, src[i], nk * 8);
        PyBuffer_Release(&b[i]);
    }
    return PyLong_FromSsize_t(nk);
fail:
    for (i = 0; i < got; i++)
        PyBuffer_Release(&b[i]);
    return NULL;
}

static PyObject *agg_apply(Aggregator *a, PyObject *args)
{
    PyObject *oc, *os;
    Py_buffer bc, bs;
    Py_ssize_t i, nslots, applied = 0;
    const int64_t *slot;
    uint64_t *counts;

    AGG_IDLE_OR_FAIL(a, NULL);

    if (!PyArg_ParseTuple(args, "OO", &oc, &os))
        return NULL;
    if (get_buf(oc, &bc, PyBUF_WRITABLE, 0, "counts") < 0)
        return NULL;
    if (get_buf(os, &bs, PyBUF_SIMPLE, a->n_keys * 8, "slots") < 0) {
        PyBuffer_Release(&bc);
        return NULL;
    }
    nslots = bc.len / (512 * 8);
    slot = bs.buf;
    counts = bc.buf;
    for (i = 0; i < a->n_keys; i++) {
        if (slot[i] >= nslots) {
            PyBuffer_Release(&bc); PyBuffer_Release(&bs);
            PyErr_SetString(PyExc_IndexError, "slot out of range of counts");
            return NULL;
        }
    }
    for (i = 0; i < a->n_keys; i++) {
        if (a->kslot[i] >= 0 && a->kslot[i] != slot[i]) {
            PyBuffer_Release(&bc); PyBuffer_Release(&bs);
            PyErr_SetString(PyExc_RuntimeError, "a key added during feed moved: undo() first");
            return NULL;
        }
    }
    for (i = 0; i < a->n_rows; i++) {
        uint32_t k = ROW_KEY(a->row[i]);
        int64_t s = slot[k];
        if (s >= 0 && a->kslot[k] < 0) {
            counts[s * 512 + ROW_SUB(a->row[i])] += ROW_COUNT(a, i);
            applied++;
        }
    }
    PyBuffer_Release(&bc);
    PyBuffer_Release(&bs);
    agg_reset(a);
    return PyLong_FromSsize_t(applied);
}

static PyObject *agg_undo(Aggregator *a, PyObject *args)
{
    PyObject *oc, *ot, *ol;
    Py_buffer bc, bt, bl;
    Py_ssize_t i, rows, undone = 0;
    uint64_t *counts, *total;
    int64_t *last;

    AGG_IDLE_OR_FAIL(a, NULL);

    if (!PyArg_ParseTuple(args, "OOO", &oc, &ot, &ol))
        return NULL;
    if (get_buf(oc, &bc, PyBUF_WRITABLE, 0, "counts") < 0)
        return NULL;
    rows = bc.len / (512 * 8);
    if (get_buf(ot, &bt, PyBUF_WRITABLE, rows * 8, "total") < 0) {
        PyBuffer_Release(&bc);
        return NULL;
    }
    if (get_buf(ol, &bl, PyBUF_WRITABLE, rows * 8, "last") < 0) {
        PyBuffer_Release(&bc); PyBuffer_Release(&bt);
        return NULL;
    }
    for (i = 0; i < a->n_keys; i++) {
        if (a->kslot[i] >= rows) {
            PyBuffer_Release(&bc); PyBuffer_Release(&bt); PyBuffer_Release(&bl);
            PyErr_SetString(PyExc_IndexError, "slot out of range of counts");
            return NULL;
        }
    }
    counts = bc.buf;
    total = bt.buf;
    last = bl.buf;
    for (i = 0; i < a->n_rows; i++) {
        int64_t s = a->kslot[ROW_KEY(a->row[i])];
        if (s >= 0) {
            counts[s * 512 + ROW_SUB(a->row[i])] -= ROW_COUNT(a, i);
            undone++;
        }
    }
    agg_sums(a);
    for (i = 0; i < a->n_keys; i++) {
        int64_t s = a->kslot[i];
        if (s >= 0) {
            total[s] -= a->kacc[i];
            last[s] = a->kold[i];
            a->kslot[i] = -1;
        }
    }
    a->n_direct = 0;
    PyBuffer_Release(&bc); PyBuffer_Release(&bt); PyBuffer_Release(&bl);
    return PyLong_FromSsize_t(undone);
}

static PyObject *agg_learn(Aggregator *a, PyObject *args)
{
    PyObject *ok, *os;
    Py_buffer bk, bs;
    Py_ssize_t i, n, learned = 0;
    const uint64_t *key;
    const int64_t *slot;

    AGG_IDLE_OR_FAIL(a, NULL);

    if (!PyArg_ParseTuple(args, "OO", &ok, &os))
        return NULL;
    if (get_buf(ok, &bk, PyBUF_SIMPLE, 0, "keys") < 0)
        return NULL;
    if (get_buf(os, &bs, PyBUF_SIMPLE, bk.len, "slots") < 0) {
        PyBuffer_Release(&bk);
        return NULL;
    }
    n = bk.len / 8;
    key = bk.buf;
    slot = bs.buf;
    for (i = 0; i < n; i++) {
        uint64_t g;
        int32_t m;
        if (slot[i] < 0)
            continue;
        g = hash64(key[i] >> 9) & a->map_mask;
        while ((m = a->mtab[g]) >= 0 && a->mkey[m] != key[i])
            g = (g + 1) & a->map_mask;
        if (m >= 0) {
            a->mslot[m] = slot[i];
        } else {
            if (a->map_n >= a->map_cap)
                continue;
            m = (int32_t)a->map_n++;
            a->mtab[g] = m;
            a->mkey[m] = key[i];
            a->mslot[m] = slot[i];
        }
        learned++;
    }
    PyBuffer_Release(&bk);
    PyBuffer_Release(&bs);
    return PyLong_FromSsize_t(learned);
}

static PyObject *agg_fold(Aggregator *a, PyObject *args)
{
    PyObject *oc;
    Py_buffer bc;
    Py_ssize_t i, n = a->n_dirty;

    AGG_IDLE_OR_FAIL(a, NULL);
    if (!PyArg_ParseTuple(args, "O", &oc))
        return NULL;
    if (n == 0)
        return PyLong_FromSsize_t(0);
    if (get_buf(oc, &bc, PyBUF_WRITABLE, 0, "counts") < 0)
        return NULL;
    if (bc.len / (512 * 8) != a->delta_rows) {
        PyBuffer_Release(&bc);
        PyErr_SetString(PyExc_ValueError, "counts is not the array the deltas were added for");
        return NULL;
    }
    for (i = 0; i < n; i++) {
        int32_t s = a->dirty[i];
        fold_slot(bc.buf, a->delta, a->dsum, s);
        a->indirty[s] = 0;
    }
    a->n_dirty = 0;
    PyBuffer_Release(&bc);
    return PyLong_FromSsize_t(n);
}

static PyObject *agg_forget(Aggregator *a, PyObject *noargs)
{
    Py_ssize_t i;

    AGG_IDLE_OR_FAIL(a, NULL);
    for (i = 0; i <= (Py_ssize_t)a->map_mask; i++)
        a->mtab[i] = -1;
    a->map_n = 0;
    Py_RETURN_NONE;
}

static PyObject *agg_clear(Aggregator *a, PyObject *noargs)
{
    AGG_IDLE_OR_FAIL(a, NULL);
    agg_reset(a);
    Py_RETURN_NONE;
}

static PyObject *agg_get_rows(Aggregator *a, void *closure) { return PyLong_FromSsize_t(a->n_rows); }
static PyObject *agg_get_keys(Aggregator *a, void *closure) { return PyLong_FromSsize_t(a->n_keys); }
static PyObject *agg_get_max(Aggregator *a, void *closure) { return PyLong_FromSsize_t(a->max_rows); }
static PyObject *agg_get_map(Aggregator *a, void *closure) { return PyLong_FromSsize_t(a->map_n); }
static PyObject *agg_get_direct(Aggregator *a, void *closure) { return PyLong_FromSsize_t(a->n_direct); }
static PyObject *agg_get_dirty(Aggregator *a, void *closure) { return PyLong_FromSsize_t(a->n_dirty); }
static PyObject *agg_get_acc(Aggregator *a, void *closure) { return PyLong_FromUnsignedLongLong(a->acc_all); }

static PyGetSetDef agg_getset[] = {
    {"n_rows", (getter)agg_get_rows, NULL, "recorded lines held", NULL},
    {"n_keys", (getter)agg_get_keys, NULL, "distinct THP keys held", NULL},
    {"max_rows", (getter)agg_get_max, NULL, "row capacity", NULL},
    {"map_size", (getter)agg_get_map, NULL, "keys in the key -> slot map", NULL},
    {"n_direct", (getter)agg_get_direct, NULL, "keys of this batch added directly", NULL},
    {"n_dirty", (getter)agg_get_dirty, NULL, "slots with deltas not yet folded", NULL},
    {"acc_all", (getter)agg_get_acc, NULL, "summed counts of the rows held (mod 2**64)", NULL},
    {NULL},
};

static PyMethodDef agg_methods[] = {
    {"feed", (PyCFunction)agg_feed, METH_VARARGS,
     "feed(data, counts=None, total=None, last=None, now=0) -> (consumed, n_ok, n_malformed, n_zero)"},
    {"keys", (PyCFunction)agg_keys, METH_VARARGS,
     "keys(keys, key_lines, key_acc) -> n_keys: copy the per-key sums (first-appearance order)"},
    {"apply", (PyCFunction)agg_apply, METH_VARARGS,
     "apply(counts, slots) -> rows added: counts[slots[key], sub] += count per row (slot -1: skipped); resets"},
    {"clear", (PyCFunction)agg_clear, METH_NOARGS, "drop what is held"},
    {"undo", (PyCFunction)agg_undo, METH_VARARGS,
     "undo(counts, total, last) -> rows: take back the direct adds of this batch"},
    {"learn", (PyCFunction)agg_learn, METH_VARARGS,
     "learn(keys, slots) -> n: remember key -> slot (slot >= 0) for direct adds in later feeds"},
    {"forget", (PyCFunction)agg_forget, METH_NOARGS, "drop the key -> slot map"},
    {"fold", (PyCFunction)agg_fold, METH_VARARGS,
     "fold(counts) -> slots: add the pending per-slot deltas of direct adds into counts"},
    {NULL},
};

static PyTypeObject AggregatorType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "damond.spe._feedparse.Aggregator",
    .tp_basicsize = sizeof(Aggregator),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Aggregator(max_rows=32768): parse spe_feed lines into per-THP sums and rows",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)agg_init,
    .tp_dealloc = (destructor)agg_dealloc,
    .tp_methods = agg_methods,
    .tp_getset = agg_getset,
};


int spe_add_aggregator(PyObject *m)
{
    if (PyType_Ready(&AggregatorType) < 0)
        return -1;
    Py_INCREF(&AggregatorType);
    if (PyModule_AddObject(m, "Aggregator", (PyObject *)&AggregatorType) < 0) {
        Py_DECREF(&AggregatorType);
        return -1;
    }
    return 0;
}
