/*
 * damond.spe._feedparse.Aggregator, the batch methods (see aggregator.c for the contract):
 * keys, apply, undo, learn, fold, forget, clear.
 */
#define _GNU_SOURCE
#include "aggregator.h"

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

PyObject *agg_keys(Aggregator *a, PyObject *args)
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

PyObject *agg_apply(Aggregator *a, PyObject *args)
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

PyObject *agg_undo(Aggregator *a, PyObject *args)
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
    for (i = 0; i < KCACHE; i++)
        a->cslot[i] = -1;
    a->n_direct = 0;
    PyBuffer_Release(&bc); PyBuffer_Release(&bt); PyBuffer_Release(&bl);
    return PyLong_FromSsize_t(undone);
}

PyObject *agg_learn(Aggregator *a, PyObject *args)
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

PyObject *agg_fold(Aggregator *a, PyObject *args)
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

PyObject *agg_forget(Aggregator *a, PyObject *noargs)
{
    Py_ssize_t i;

    AGG_IDLE_OR_FAIL(a, NULL);
    for (i = 0; i <= (Py_ssize_t)a->map_mask; i++)
        a->mtab[i] = -1;
    a->map_n = 0;
    Py_RETURN_NONE;
}

PyObject *agg_clear(Aggregator *a, PyObject *noargs)
{
    AGG_IDLE_OR_FAIL(a, NULL);
    agg_reset(a);
    Py_RETURN_NONE;
}

