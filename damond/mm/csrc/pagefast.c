/*
 * damond.mm._pagefast: the per-sample byte operations of damond/mm/pagebytes.py in one
 * C loop each (optional, built by setup.py; pagebytes.py holds the identical numpy code
 * and takes it whenever this module is missing or a call returns -1).
 *
 * DAMON's samples touch a few bytes per call (10..1000 sampling addresses); numpy needs
 * 4..10 calls of ~0.5 us each for one such operation, so on this path the Python/numpy
 * call overhead, not the work, is the cost. Each function takes the PageBytes arrays
 * (flat: uint8 pool, base: int64 flat offset of each block's row, bsh: bool per block)
 * and returns -1, having written nothing, for anything it does not handle (an index out
 * of range or negative, a non-contiguous array, a shared block that needs a private row,
 * a head map entry not known yet): the caller then takes the numpy path.
 *
 * gather(flat, base, idx, lut, out) -> 0 | -1
 *     out[i] = lut[flat[base[idx[i] >> 9] + (idx[i] & 511)]] (lut and out: 1 byte each).
 * update(flat, base, bsh, hmap, idx, lut) -> repointed blocks | -1
 *     a[idx] = lut[a[idx]] as numpy's gather-then-scatter (repeated indexes: the value
 *     computed from the old byte): bytes of private blocks in place; the head byte of a
 *     shared block by moving the block to row hmap[row] (a flat offset, < 0: unknown), as
 *     PageBytes._update_heads does. A changed tail byte of a shared block: -1.
 * update_runs(flat, base, bsh, hmap, idx, lut, runs) -> (repointed blocks, members) | -1
 *     update() of the indexes that lie in the strided runs (as members_runs), and how many do.
 * pa_translate(flat, base, oflat, obase, addrs, base_pfn, present, heads, sel, oh, uh, sz)
 *     -> (k, min order, max order, heads in order, u) | -1
 *     paddr's per-sample translation (damond/mm/pa_sample.py): for each physical address
 *     addrs[i] (uint64) whose page p = (addrs[i] >> 12) - base_pfn is in range and has the
 *     `present` bit in flat, in order: sel[k] = i, heads[k] = p & ~((1 << min(o, 40)) - 1)
 *     with o the page's byte in the order array (oflat, obase), oh[k] = the head's order;
 *     uh[:u] = heads[:k] without repeats of the one before (their sorted unique values
 *     when "in order", heads never decreasing); sz[i] = 4096 << min(head's order, 40) for
 *     a present page, 4096 for any other address.
 * members(sorted, j, out) -> k
 *     out[:k] = the values of j (in order) found in the sorted int64 array `sorted`.
 * members_runs(runs, j, out) -> k | -1
 *     the same for the union of strided runs, `runs` an int64 array of (start, stop, step)
 *     rows (step >= 1): v is in one when start <= v < stop and (v - start) % step == 0.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define SHIFT 9
#define OFF ((int64_t)511)

/* Acquire buffers; on failure release what was acquired, clear the error, return 0. */
static int get_bufs(PyObject *const *o, Py_buffer *b, int n, const int *writable)
{
    int i;
    for (i = 0; i < n; i++) {
        if (PyObject_GetBuffer(o[i], &b[i], writable[i] ? PyBUF_WRITABLE : PyBUF_SIMPLE) < 0) {
            while (i--)
                PyBuffer_Release(&b[i]);
            PyErr_Clear();
            return 0;
        }
    }
    return 1;
}

static void release(Py_buffer *b, int n)
{
    while (n--)
        PyBuffer_Release(&b[n]);
}

static PyObject *pf_gather(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer b[5];
    static const int wr[5] = {0, 0, 0, 0, 1};
    Py_ssize_t i, n, nb, nf;
    const int64_t *base, *idx;
    const uint8_t *flat, *lut;
    uint8_t *out;
    long ret = 0;

    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "gather(flat, base, idx, lut, out)");
        return NULL;
    }
    if (!get_bufs(args, b, 5, wr))
        return PyLong_FromLong(-1);
    flat = b[0].buf; base = b[1].buf; idx = b[2].buf; lut = b[3].buf; out = b[4].buf;
    nf = b[0].len; nb = b[1].len / 8; n = b[2].len / 8;
    if (b[3].len < 256 || b[4].len < n) {
        ret = -1;
        goto done;
    }
    for (i = 0; i < n; i++) {
        int64_t k = idx[i], p;
        if (k < 0 || (k >> SHIFT) >= nb) {
            ret = -1;
            goto done;
        }
        p = base[k >> SHIFT] + (k & OFF);
        if (p < 0 || p >= nf) {
            ret = -1;
            goto done;
        }
        out[i] = lut[flat[p]];
    }
done:
    release(b, 5);
    return PyLong_FromLong(ret);
}

/* v in one of the nr strided runs (start, stop, step) rows of run (steps checked >= 1) */
static inline int in_runs(const int64_t *run, Py_ssize_t nr, int64_t v)
{
    Py_ssize_t r;
    for (r = 0; r < nr; r++) {
        int64_t st = run[3 * r], sp = run[3 * r + 1], step = run[3 * r + 2], d = v - st;
        if (v < st || v >= sp)
            continue;
        if ((step & (step - 1)) == 0 ? (d & (step - 1)) == 0 : d % step == 0)
            return 1;
    }
    return 0;
}

static int runs_ok(const int64_t *run, Py_ssize_t nr)
{
    Py_ssize_t r;
    for (r = 0; r < nr; r++)
        if (run[3 * r + 2] <= 0)
            return 0;
    return 1;
}

/* update / update_runs: args flat, base, bsh, hmap, idx, lut[, runs] */
static PyObject *do_update(PyObject *const *args, Py_ssize_t nargs, int with_runs)
{
    Py_buffer b[7];
    static const int wr[7] = {1, 1, 0, 0, 0, 0, 0};
    PyObject *o[7];
    Py_ssize_t i, n, nb, nf, nh = 0, nr = 0, nmem = 0;
    int64_t *base, *tmp = NULL;
    const int64_t *idx, *hmap = NULL, *run = NULL;
    const uint8_t *lut, *bsh;
    uint8_t *flat;
    long ret = 0;
    int nbuf, has_hmap;

    if (nargs != 6 + with_runs) {
        PyErr_SetString(PyExc_TypeError, with_runs ? "update_runs(flat, base, bsh, hmap, idx, lut, runs)"
                                                   : "update(flat, base, bsh, hmap, idx, lut)");
        return NULL;
    }
    has_hmap = args[3] != Py_None;
    /* buffers in order: flat, base, bsh, idx, lut[, runs][, hmap] */
    o[0] = args[0]; o[1] = args[1]; o[2] = args[2]; o[3] = args[4]; o[4] = args[5];
    nbuf = 5;
    if (with_runs)
        o[nbuf++] = args[6];
    if (has_hmap)
        o[nbuf++] = args[3];
    if (!get_bufs(o, b, nbuf, wr))
        return PyLong_FromLong(-1);
    flat = b[0].buf; base = b[1].buf; bsh = b[2].buf; idx = b[3].buf; lut = b[4].buf;
    nf = b[0].len; nb = b[1].len / 8; n = b[3].len / 8;
    if (with_runs) {
        run = b[5].buf;
        nr = b[5].len / 24;
    }
    if (has_hmap) {
        hmap = b[nbuf - 1].buf;
        nh = b[nbuf - 1].len / 8;
    }
    if (b[4].len < 256 || b[2].len < nb || (with_runs && !runs_ok(run, nr))) {
        ret = -1;
        goto done;
    }
    /* pass 1: what each index becomes, from the old bytes (tmp[i]: the new byte, or for a
     * shared head the row offset to move to, as -2 - offset; -1: nothing to do) */
    tmp = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(int64_t));
    if (tmp == NULL) {
        release(b, nbuf);
        return PyErr_NoMemory();
    }
    for (i = 0; i < n; i++) {
        int64_t k = idx[i], blk, p, row;
        uint8_t cur, nw;
        if (with_runs) {
            if (!in_runs(run, nr, k)) {
                tmp[i] = -1;
                continue;
            }
            nmem++;
        }
        if (k < 0 || (blk = k >> SHIFT) >= nb) {
            ret = -1;
            goto done;
        }
        p = base[blk] + (k & OFF);
        if (p < 0 || p >= nf) {
            ret = -1;
            goto done;
        }
        cur = flat[p];
        nw = lut[cur];
        if (!bsh[blk]) {
            tmp[i] = nw;
            continue;
        }
        if (nw == cur) {
            tmp[i] = -1;
            continue;
        }
        row = base[blk] >> SHIFT;
        if ((k & OFF) || !has_hmap || row >= nh || hmap[row] < 0 || hmap[row] >= nf) {
            ret = -1;
            goto done;
        }
        tmp[i] = -2 - hmap[row];
    }
    /* pass 2: write (private bytes first: their positions do not depend on the moves) */
    for (i = 0; i < n; i++) {
        int64_t k = idx[i];
        if (tmp[i] >= 0)
            flat[base[k >> SHIFT] + (k & OFF)] = (uint8_t)tmp[i];
    }
    for (i = 0; i < n; i++) {
        if (tmp[i] <= -2) {
            base[idx[i] >> SHIFT] = -2 - tmp[i];
            ret++;
        }
    }
done:
    PyMem_Free(tmp);
    release(b, nbuf);
    if (with_runs && ret >= 0)
        return Py_BuildValue("(ln)", ret, nmem);
    return PyLong_FromLong(ret);
}

static PyObject *pf_update(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return do_update(args, nargs, 0);
}

static PyObject *pf_update_runs(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return do_update(args, nargs, 1);
}

static PyObject *pf_members(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer b[3];
    static const int wr[3] = {0, 0, 1};
    Py_ssize_t i, n, m, k = 0, pos = 0;
    const int64_t *s, *j;
    int64_t *out;

    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "members(sorted, j, out)");
        return NULL;
    }
    if (!get_bufs(args, b, 3, wr))
        return PyLong_FromLong(-1);
    s = b[0].buf; j = b[1].buf; out = b[2].buf;
    m = b[0].len / 8; n = b[1].len / 8;
    if (b[2].len / 8 < n) {
        release(b, 3);
        return PyLong_FromLong(-1);
    }
    for (i = 0; i < n && m; i++) {
        int64_t v = j[i];
        Py_ssize_t lo, hi, step;
        /* gallop from the last position (sampling addresses come sorted) */
        if (s[pos] <= v) {
            lo = pos;
            step = 1;
            hi = pos + 1;
            while (hi < m && s[hi] <= v) {
                lo = hi;
                step <<= 1;
                hi = lo + step;
            }
            if (hi > m)
                hi = m;
        } else {
            hi = pos;
            lo = 0;
        }
        /* s[lo] <= v (or lo == 0), v < s[hi] (or hi == m): find the last s[x] <= v */
        while (hi - lo > 1) {
            Py_ssize_t mid = lo + (hi - lo) / 2;
            if (s[mid] <= v)
                lo = mid;
            else
                hi = mid;
        }
        pos = lo;
        if (s[lo] == v)
            out[k++] = v;
    }
    release(b, 3);
    return PyLong_FromSsize_t(k);
}

static PyObject *pf_members_runs(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer b[3];
    static const int wr[3] = {0, 0, 1};
    Py_ssize_t i, n, nr, k = 0;
    const int64_t *run, *j;
    int64_t *out;

    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "members_runs(runs, j, out)");
        return NULL;
    }
    if (!get_bufs(args, b, 3, wr))
        return PyLong_FromLong(-1);
    run = b[0].buf; j = b[1].buf; out = b[2].buf;
    nr = b[0].len / 24; n = b[1].len / 8;
    if (b[2].len / 8 < n) {
        release(b, 3);
        return PyLong_FromLong(-1);
    }
    if (!runs_ok(run, nr)) {
        release(b, 3);
        return PyLong_FromLong(-1);
    }
    for (i = 0; i < n; i++)
        if (in_runs(run, nr, j[i]))
            out[k++] = j[i];
    release(b, 3);
    return PyLong_FromSsize_t(k);
}

static PyObject *pf_pa_translate(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer b[10];
    PyObject *in[10];
    static const int wr[10] = {0, 0, 0, 0, 0, 1, 1, 1, 1, 1};
    Py_ssize_t i, n, k = 0, u = 0, nb, nf, nob, nof;
    const int64_t *base, *obase;
    const uint64_t *addrs;
    const uint8_t *flat, *oflat;
    int64_t *heads, *sel, *uh, pfn0, prev = -1;
    uint64_t *sz;
    uint8_t *oh, present, omin = 255, omax = 0;
    int inc = 1, bad = 0;

    if (nargs != 12) {
        PyErr_SetString(PyExc_TypeError, "pa_translate(flat, base, oflat, obase, addrs, base_pfn, present, heads, sel, oh, uh, sz)");
        return NULL;
    }
    pfn0 = PyLong_AsLongLong(args[5]);
    present = (uint8_t)PyLong_AsLong(args[6]);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        return PyLong_FromLong(-1);
    }
    for (i = 0; i < 5; i++)
        in[i] = args[i];
    in[5] = args[7]; in[6] = args[8]; in[7] = args[9]; in[8] = args[10]; in[9] = args[11];
    if (!get_bufs(in, b, 10, wr))
        return PyLong_FromLong(-1);
    flat = b[0].buf; base = b[1].buf; oflat = b[2].buf; obase = b[3].buf; addrs = b[4].buf;
    heads = b[5].buf; sel = b[6].buf; oh = b[7].buf; uh = b[8].buf; sz = b[9].buf;
    nf = b[0].len; nb = b[1].len / 8; nof = b[2].len; nob = b[3].len / 8; n = b[4].len / 8;
    if (nob != nb || b[5].len / 8 < n || b[6].len / 8 < n || b[7].len < n || b[8].len / 8 < n || b[9].len / 8 < n) {
        release(b, 10);
        return PyLong_FromLong(-1);
    }
    for (i = 0; i < n; i++) {
        int64_t p = (int64_t)(addrs[i] >> 12) - pfn0, q, h;
        uint8_t o, ho;
        sz[i] = 4096;
        if ((addrs[i] >> 12) > (uint64_t)INT64_MAX || p < 0 || (p >> SHIFT) >= nb)
            continue;
        q = base[p >> SHIFT] + (p & OFF);
        if (q < 0 || q >= nf) { bad = 1; break; }
        if (!(flat[q] & present))
            continue;
        q = obase[p >> SHIFT] + (p & OFF);
        if (q < 0 || q >= nof) { bad = 1; break; }
        o = oflat[q];
        h = p & ~(((int64_t)1 << (o < 40 ? o : 40)) - 1);
        q = obase[h >> SHIFT] + (h & OFF);
        if (q < 0 || q >= nof) { bad = 1; break; }
        ho = oflat[q];
        if (h < prev)
            inc = 0;
        if (h != prev || !k)
            uh[u++] = h;
        prev = h;
        if (ho < omin) omin = ho;
        if (ho > omax) omax = ho;
        sel[k] = i; heads[k] = h; oh[k] = ho;
        sz[i] = (uint64_t)4096 << (ho < 40 ? ho : 40);
        k++;
    }
    release(b, 10);
    if (bad)
        return PyLong_FromLong(-1);
    return Py_BuildValue("(niiin)", k, (int)omin, (int)omax, inc, u);
}

static PyMethodDef methods[] = {
    {"gather", (PyCFunction)(void (*)(void))pf_gather, METH_FASTCALL, "gather(flat, base, idx, lut, out) -> 0 | -1"},
    {"update", (PyCFunction)(void (*)(void))pf_update, METH_FASTCALL,
     "update(flat, base, bsh, hmap, idx, lut) -> blocks moved | -1"},
    {"pa_translate", (PyCFunction)(void (*)(void))pf_pa_translate, METH_FASTCALL,
     "pa_translate(flat, base, oflat, obase, addrs, base_pfn, present, heads, sel, oh, uh, sz) -> (k, omin, omax, inc, u) | -1"},
    {"members", (PyCFunction)(void (*)(void))pf_members, METH_FASTCALL, "members(sorted, j, out) -> k"},
    {"members_runs", (PyCFunction)(void (*)(void))pf_members_runs, METH_FASTCALL, "members_runs(runs, j, out) -> k"},
    {"update_runs", (PyCFunction)(void (*)(void))pf_update_runs, METH_FASTCALL,
     "update_runs(flat, base, bsh, hmap, idx, lut, runs) -> (blocks moved, members) | -1"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_pagefast", NULL, -1, methods};

PyMODINIT_FUNC PyInit__pagefast(void)
{
    return PyModule_Create(&module);
}
