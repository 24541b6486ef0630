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
 * `feed_parts(parts, i, off, ...)` is feed over a list of buffers (each one's lines on their
 * own) in one call without the GIL; it returns where it stopped (max_rows).
 * This file: state, feed and the type; aggregator_ops.c: the batch methods.
 */
#define _GNU_SOURCE
#include "aggregator.h"

static void agg_free_buffers(Aggregator *a)
{
    PyMem_Free(a->ktab); PyMem_Free(a->row); PyMem_Free(a->rcnt);
    PyMem_Free(a->key); PyMem_Free(a->klines); PyMem_Free(a->kacc); PyMem_Free(a->kpos);
    PyMem_Free(a->kold); a->kold = NULL;
    PyMem_Free(a->kslot); PyMem_Free(a->mtab); PyMem_Free(a->mkey); PyMem_Free(a->mslot);
    PyMem_Free(a->delta); PyMem_Free(a->dsum); PyMem_Free(a->dirty); PyMem_Free(a->indirty);
    a->delta = NULL;
    a->indirty = NULL;
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

void agg_reset(Aggregator *a)
{
    Py_ssize_t i;
    for (i = 0; i < a->n_kt; i++)
        a->ktab[a->kpos[i]] = -1;
    for (i = 0; i < KCACHE; i++) {
        a->ckidx[i] = -1;
        a->ckey[i] = CKEY_NONE;
    }
    a->n_rows = a->n_keys = a->n_kt = a->n_direct = a->flushed = 0;
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
    a->n_keys = a->n_kt = 0;
    agg_reset(a);
    return 0;
}

static void agg_dealloc(Aggregator *a)
{
    agg_free_buffers(a);
    Py_TYPE(a)->tp_free((PyObject *)a);
}

/* Put key index j (of key k) into the batch's hash table unless it is there. */
static void ktab_put(Aggregator *a, uint64_t k, int32_t j)
{
    uint64_t h = hash64(k >> 9) & a->tmask;
    int32_t x;

    while ((x = a->ktab[h]) >= 0) {
        if (x == j)
            return;
        h = (h + 1) & a->tmask;
    }
    a->ktab[h] = j;
    a->kpos[a->n_kt++] = (uint32_t)h;
}

/* The key index of THP key k in this batch, creating it (and looking up the tree slot for
 * direct adds) on first sight; the caller has missed the direct-mapped cache. A batch's
 * keys are in the cache or in the hash table: a key enters the table only when another
 * takes its cache entry, so a batch whose keys never collide there never touches it. */
static __attribute__((noinline)) Py_ssize_t agg_key(Aggregator *a, uint64_t k)
{
    uint64_t h;
    int32_t j;
    unsigned c = (unsigned)(k >> 9) & (KCACHE - 1);

    if (a->n_kt) {
        h = hash64(k >> 9) & a->tmask;
        while ((j = a->ktab[h]) >= 0) {
            if (a->key[j] == k)
                goto found;
            h = (h + 1) & a->tmask;
        }
    }
    j = (int32_t)a->n_keys++;
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
    if (a->ckidx[c] >= 0)           /* the cached key leaves the cache: keep it findable */
        ktab_put(a, a->ckey[c], a->ckidx[c]);
    a->ckey[c] = k;
    a->ckidx[c] = j;
    a->cslot[c] = a->kslot[j];
    return j;
}

int get_buf(PyObject *o, Py_buffer *b, int flags, Py_ssize_t need, const char *name)
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
    a->delta = PyMem_Calloc(rows * 512, sizeof(delta_t));
    a->dsum = PyMem_Calloc(rows, sizeof(uint32_t));
    a->dirty = PyMem_Calloc(rows, sizeof(int32_t));
    a->indirty = PyMem_Calloc(rows, 1);
    a->delta_rows = rows;
    if (!a->delta || !a->dsum || !a->dirty || !a->indirty) {
        PyMem_Free(a->delta); PyMem_Free(a->dsum); PyMem_Free(a->dirty); PyMem_Free(a->indirty);
        a->delta = NULL;
    a->indirty = NULL;
        a->dsum = NULL;
        a->dirty = NULL;
        a->delta_rows = 0;
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* The delta add of a common direct line is deferred by DEFER lines (a ring of delta
 * offsets, -1: none): its address is known only at the end of the line's parse, and
 * prefetched then, so the add itself never waits on the cache. */
#define DEFER 16

static void pend_drain(Aggregator *restrict a, Py_ssize_t *pend)
{
    int i;
    for (i = 0; i < DEFER; i++) {
        if (pend[i] >= 0)
            a->delta[pend[i]] += 1;
        pend[i] = -1;
    }
}

/* The direct add of one line of a key the tree holds at slot s: its total, and its count
 * into the slot's small deltas (straight into the counters when it is too big for them).
 * A slot with deltas (dsum > 0) is on the dirty list already. */
static __attribute__((noinline)) void agg_direct_slow(Aggregator *restrict a, Py_ssize_t *pend, int64_t s,
                                                      unsigned sub, uint64_t c)
{
    pend_drain(a, pend);
    a->total[s] += c;
    if (c > DELTA_MAX - a->dsum[s]) {
        if (c > DELTA_MAX) {               /* a big histogram count: straight in */
            a->counts[s * 512 + sub] += c;
            return;
        }
        fold_slot(a->counts, a->delta, a->dsum, s);
    }
    if (!a->indirty[s]) {
        a->indirty[s] = 1;
        a->dirty[a->n_dirty++] = (int32_t)s;
    }
    a->dsum[s] += (uint32_t)c;
    a->delta[s * 512 + sub] += (delta_t)c;
}

/* One recorded line: a row (key index, subpage, count) and, when its key is in the tree
 * (direct adds), the add itself, in the same pass as the parse. */
static inline __attribute__((always_inline)) void agg_row(Aggregator *restrict a, Py_ssize_t *pend, Py_ssize_t r,
                                                          uint64_t pfn, uint64_t cnt)
{
    uint64_t k = pfn & ~(uint64_t)511;
    unsigned c = (unsigned)(k >> 9) & (KCACHE - 1);
    Py_ssize_t kidx;
    unsigned sub = (unsigned)(pfn & 511);
    int64_t s;

    if (a->ckey[c] == k) {          /* the slot comes with the hit: no load waits on kidx */
        kidx = a->ckidx[c];
        s = a->cslot[c];
    } else {
        kidx = agg_key(a, k);
        s = a->kslot[kidx];
    }

    if (cnt == 1) {
        a->row[r] = (uint32_t)kidx << 9 | sub;
    } else {
        a->row[r] = ROW_CNT | (uint32_t)kidx << 9 | sub;
        a->rcnt[r] = cnt;
    }
    if (s >= 0) {
        uint32_t d = a->dsum[s];
        if (cnt == 1 && d - 1 < DELTA_MAX - DEFER) {     /* the common add: 1 <= dsum, room for the ring */
            Py_ssize_t o = s * 512 + sub, *q = &pend[r & (DEFER - 1)];
            __builtin_prefetch(&a->delta[o], 1);
            a->dsum[s] = d + 1;
            a->total[s] += 1;
            if (*q >= 0)
                a->delta[*q] += 1;
            *q = o;
        } else {
            agg_direct_slow(a, pend, s, sub, cnt);
        }
    }
}

/* Scan [*pp, end) until it is consumed or max_rows rows are held (no GIL needed). Lines
 * are cut at the newlines of 64-byte masks, which keeps finding the next line off the
 * parse's dependency chain; the most common line, `0x` + 1..7 hex digits, is parsed from
 * one 8-byte load, the others by fast_line / parse_line. */
static void agg_scan(Aggregator *restrict a, const unsigned char **pp, const unsigned char *end,
                     Py_ssize_t *n_ok, Py_ssize_t *n_bad, Py_ssize_t *n_zero)
{
    const unsigned char *p = *pp, *base = p;
    Py_ssize_t r = a->n_rows, r0 = r, maxr = a->max_rows, bad = 0, zero = 0;
    uint64_t extra = 0, mask = p < end ? nl_mask64(base, end) : 0;   /* extra: sum of (count - 1) */
    Py_ssize_t pend[DEFER];
    int i;

    for (i = 0; i < DEFER; i++)
        pend[i] = -1;

    while (p < end && r < maxr) {
        const unsigned char *nl, *e;
        uint64_t pfn, cnt = 1;
        int has_count = 0;

        while (mask == 0 && base + 64 < end) {      /* the next newline at or after p */
            base += 64;
            mask = nl_mask64(base, end);
        }
        nl = mask ? base + __builtin_ctzll(mask) : NULL;
        mask &= mask - 1;
        e = nl ? nl : end;
#ifdef SPE_SWAR
        {
            size_t len = (size_t)(e - p);
            uint16_t h;

            if (nl != NULL && len - 3 <= 15 && (memcpy(&h, p, 2), (h | 0x2000) == ('0' | 'x' << 8))
                && hex_digits(p + 2, (unsigned)len - 2, &pfn))
                goto line;
        }
#endif
        if (fast_line(p, end, &pfn, &cnt, &has_count) == NULL && !parse_line(p, e, &pfn, &cnt, &has_count)) {
            bad++;
            p = nl ? nl + 1 : end;
            continue;
        }
line:
        p = nl ? nl + 1 : end;
        if (pfn == 0) {
            zero++;
            continue;
        }
        agg_row(a, pend, r, pfn, cnt);
        extra += cnt - 1;
        r++;
    }
    pend_drain(a, pend);
    a->n_rows = a->flushed = r;
    a->acc_all += (uint64_t)(r - r0) + extra;
    *pp = p;
    *n_ok = r - r0;
    *n_bad = bad;
    *n_zero = zero;
}

/* Take the tree's counters for one feed call (None: no direct adds). Returns 0, or -1
 * with an exception set and nothing held. */
static int agg_begin(Aggregator *a, PyObject *counts, PyObject *total, PyObject *last, long long now,
                     Py_buffer *cb, Py_buffer *tb, Py_buffer *lb)
{
    Py_ssize_t i;

    if (a->ktab == NULL || a->busy) {
        PyErr_SetString(PyExc_RuntimeError, a->busy ? "Aggregator in use by another thread"
                                                    : "Aggregator not initialised");
        return -1;
    }
    a->counts = NULL;
    if (counts != Py_None) {
        if (get_buf(counts, cb, PyBUF_WRITABLE, 0, "counts") < 0)
            return -1;
        a->counts_rows = cb->len / (512 * 8);
        if (get_buf(total, tb, PyBUF_WRITABLE, a->counts_rows * 8, "total") < 0) {
            PyBuffer_Release(cb);
            return -1;
        }
        if (get_buf(last, lb, PyBUF_WRITABLE, a->counts_rows * 8, "last") < 0) {
            PyBuffer_Release(cb); PyBuffer_Release(tb);
            return -1;
        }
        if (delta_size(a, a->counts_rows) < 0) {
            PyBuffer_Release(cb); PyBuffer_Release(tb); PyBuffer_Release(lb);
            return -1;
        }
        a->counts = cb->buf;
        a->total = tb->buf;
        a->last = lb->buf;
        a->now = now;
    }
    for (i = 0; i < a->n_keys; i++) {      /* a batch's direct keys need the same counts each feed */
        if (a->kslot[i] >= 0 && (a->counts == NULL || a->kslot[i] >= a->counts_rows)) {
            if (a->counts != NULL) {
                PyBuffer_Release(cb); PyBuffer_Release(tb); PyBuffer_Release(lb);
            }
            a->counts = NULL;
            PyErr_SetString(PyExc_ValueError, "this batch adds directly: pass the same counters");
            return -1;
        }
    }
    return 0;
}

static void agg_end(Aggregator *a, Py_buffer *cb, Py_buffer *tb, Py_buffer *lb)
{
    if (a->counts != NULL) {
        PyBuffer_Release(cb); PyBuffer_Release(tb); PyBuffer_Release(lb);
        a->counts = NULL;
    }
}

static PyObject *agg_feed(Aggregator *a, PyObject *args)
{
    Py_buffer data, cb, tb, lb;
    PyObject *counts = Py_None, *total = Py_None, *last = Py_None;
    long long now = 0;
    Py_ssize_t n_ok = 0, n_bad = 0, n_zero = 0, consumed;
    const unsigned char *p, *end;

    if (!PyArg_ParseTuple(args, "y*|OOOL", &data, &counts, &total, &last, &now))
        return NULL;
    if (agg_begin(a, counts, total, last, now, &cb, &tb, &lb) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    p = data.buf;
    end = p + data.len;
    a->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    agg_scan(a, &p, end, &n_ok, &n_bad, &n_zero);
    Py_END_ALLOW_THREADS
    a->busy = 0;
    consumed = (Py_ssize_t)(p - (const unsigned char *)data.buf);
    PyBuffer_Release(&data);
    agg_end(a, &cb, &tb, &lb);
    return Py_BuildValue("nnnn", consumed, n_ok, n_bad, n_zero);
}

/* feed_parts(parts, i, off, counts=None, total=None, last=None, now=0) -> (i, off, n_ok,
 * n_malformed, n_zero): feed over the buffers parts[i][off:], parts[i + 1], ... (each one's
 * lines on their own, as separate feed calls) in one call without the GIL, until they are
 * consumed or max_rows rows are held; returns where it stopped. */
#define PARTS_MAX 64
static PyObject *agg_feed_parts(Aggregator *a, PyObject *args)
{
    PyObject *parts, *seq, *counts = Py_None, *total = Py_None, *last = Py_None;
    long long now = 0;
    Py_ssize_t i0, off, n, k, stop, got = 0, n_ok = 0, n_bad = 0, n_zero = 0;
    Py_buffer bufs[PARTS_MAX], cb, tb, lb;

    if (!PyArg_ParseTuple(args, "Onn|OOOL", &parts, &i0, &off, &counts, &total, &last, &now))
        return NULL;
    seq = PySequence_Fast(parts, "parts must be a sequence of buffers");
    if (seq == NULL)
        return NULL;
    n = PySequence_Fast_GET_SIZE(seq);
    if (i0 < 0 || i0 > n || off < 0) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "i / off out of range");
        return NULL;
    }
    if (n - i0 > PARTS_MAX)
        n = i0 + PARTS_MAX;            /* the caller comes back for the rest */
    for (k = i0; k < n; k++, got++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, k), &bufs[got], PyBUF_SIMPLE) < 0)
            goto fail;
    }
    if (got && off > bufs[0].len) {
        PyErr_SetString(PyExc_ValueError, "off out of range");
        goto fail;
    }
    if (agg_begin(a, counts, total, last, now, &cb, &tb, &lb) < 0)
        goto fail;
    a->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    for (k = 0; k < got; k++) {
        const unsigned char *p = (const unsigned char *)bufs[k].buf + off, *end = (const unsigned char *)bufs[k].buf + bufs[k].len;
        Py_ssize_t o, b, z;
        agg_scan(a, &p, end, &o, &b, &z);
        n_ok += o;
        n_bad += b;
        n_zero += z;
        off = p - (const unsigned char *)bufs[k].buf;
        if (p < end)
            break;                      /* max_rows rows held */
        off = 0;
    }
    Py_END_ALLOW_THREADS
    a->busy = 0;
    stop = i0 + k;
    agg_end(a, &cb, &tb, &lb);
    for (k = 0; k < got; k++)
        PyBuffer_Release(&bufs[k]);
    Py_DECREF(seq);
    return Py_BuildValue("nnnnn", stop, off, n_ok, n_bad, n_zero);
fail:
    for (k = 0; k < got; k++)
        PyBuffer_Release(&bufs[k]);
    Py_DECREF(seq);
    return NULL;
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
    {"feed_parts", (PyCFunction)agg_feed_parts, METH_VARARGS,
     "feed_parts(parts, i, off, counts=None, total=None, last=None, now=0) -> (i, off, n_ok, n_malformed, n_zero)"},
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
