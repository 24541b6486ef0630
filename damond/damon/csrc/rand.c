/* damond.damon._rand: the sampling addresses of several samples in one call.
 *
 * bounded_rows(capsule, lo, hi, out) fills out (k x n uint64, C order) with what numpy's
 * Generator.integers(lo, hi, size=(k, n), dtype=np.uint64) draws from the same bit
 * generator: element after element, off + a bounded integer of rng = hi - lo - 1, by
 * numpy's own rules (random_bounded_uint64 in numpy/random/src/distributions): rng 0
 * draws nothing, rng < 2^32 takes Lemire's method on 32-bit draws, wider ranges on 64-bit
 * draws. numpy does the same per element but through its broadcasting iterator, several
 * times slower. The caller holds the bit generator's lock and checks the result against
 * numpy once (damond/damon/vaddr.py), so a numpy that draws otherwise is never followed.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* numpy/random/bitgen.h: the struct behind a BitGenerator's "BitGenerator" capsule */
typedef struct bitgen {
    void *state;
    uint64_t (*next_uint64)(void *st);
    uint32_t (*next_uint32)(void *st);
    double (*next_double)(void *st);
    uint64_t (*next_raw)(void *st);
} bitgen_t;

static inline uint32_t lemire32(bitgen_t *bg, uint32_t rng)
{
    const uint32_t rng_excl = rng + 1;
    uint64_t m = (uint64_t)bg->next_uint32(bg->state) * rng_excl;
    uint32_t leftover = (uint32_t)m;
    if (leftover < rng_excl) {
        const uint32_t threshold = (UINT32_MAX - rng) % rng_excl;
        while (leftover < threshold) {
            m = (uint64_t)bg->next_uint32(bg->state) * rng_excl;
            leftover = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

static inline uint64_t lemire64(bitgen_t *bg, uint64_t rng)
{
    const uint64_t rng_excl = rng + 1;
    __uint128_t m = (__uint128_t)bg->next_uint64(bg->state) * rng_excl;
    uint64_t leftover = (uint64_t)m;
    if (leftover < rng_excl) {
        const uint64_t threshold = (UINT64_MAX - rng) % rng_excl;
        while (leftover < threshold) {
            m = (__uint128_t)bg->next_uint64(bg->state) * rng_excl;
            leftover = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

static uint64_t bounded(bitgen_t *bg, uint64_t off, uint64_t rng)
{
    if (rng == 0)
        return off;
    if (rng <= 0xFFFFFFFFULL) {
        if (rng == 0xFFFFFFFFULL)
            return off + bg->next_uint32(bg->state);
        return off + lemire32(bg, (uint32_t)rng);
    }
    if (rng == UINT64_MAX)
        return off + bg->next_uint64(bg->state);
    return off + lemire64(bg, rng);
}

static PyObject *bounded_rows(PyObject *self, PyObject *args)
{
    PyObject *capsule;
    Py_buffer lo, hi, out;
    (void)self;
    if (!PyArg_ParseTuple(args, "Oy*y*w*", &capsule, &lo, &hi, &out))
        return NULL;
    PyObject *ret = NULL;
    bitgen_t *bg = PyCapsule_GetPointer(capsule, "BitGenerator");
    Py_ssize_t n = lo.len / 8, total = out.len / 8;
    if (bg == NULL)
        goto done;
    if (lo.len != hi.len || lo.len % 8 || out.len % 8 || (n == 0 && total) || (n && total % n)) {
        PyErr_SetString(PyExc_ValueError, "bounded_rows: lo, hi must be n uint64, out k * n uint64");
        goto done;
    }
    const uint64_t *l = lo.buf, *h = hi.buf;
    uint64_t *o = out.buf;
    for (Py_ssize_t j = 0; j < n; j++) {
        if (h[j] <= l[j]) {
            PyErr_SetString(PyExc_ValueError, "bounded_rows: low >= high");
            goto done;
        }
    }
    for (Py_ssize_t i = 0; i < total; i += n)
        for (Py_ssize_t j = 0; j < n; j++)
            o[i + j] = bounded(bg, l[j], h[j] - l[j] - 1);
    ret = Py_None;
    Py_INCREF(ret);
done:
    PyBuffer_Release(&lo);
    PyBuffer_Release(&hi);
    PyBuffer_Release(&out);
    return ret;
}

static PyMethodDef methods[] = {
    {"bounded_rows", bounded_rows, METH_VARARGS,
     "bounded_rows(capsule, lo, hi, out): fill out (k x n uint64) as Generator.integers(lo, hi, size=(k, n), dtype=uint64)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_rand", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__rand(void)
{
    return PyModule_Create(&module);
}
