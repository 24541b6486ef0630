/*
 * damond.spe._feedparse: the compiled spe_feed / spe-hist scanners (optional, built by
 * setup.py from the C files in damond/spe/csrc; damond/spe/feed.py and hist.py hold the identical
 * pure-Python/numpy fallbacks). This file: the module, its digit table and `parse`;
 * aggregator.c / aggregator_ops.c: the `Aggregator` type (the spe_feed hot path);
 * perfscan.c: `perf_pa`.
 *
 * parse(data, pfns_out, counts_out) -> (n_ok, n_malformed, n_zero, has_counts)
 *
 * data: bytes-like of lines separated by '\n' (a last line without '\n' is a line too,
 * an empty buffer has no lines), each in the grammar of feedparse.h. PFNs != 0 go to
 * pfns_out (uint64), their counts to counts_out (uint64); pfn 0 counts as n_zero,
 * anything else (overflow, empty line, count 0) as n_malformed. The output buffers must
 * hold at least (len(data) + 1) / 2 + 1 entries. The GIL is released while scanning.
 */
#define _GNU_SOURCE
#include "feedparse.h"

signed char spe_digit_val[256];
uint16_t spe_hex2[65536];

void spe_init_digits(void)
{
    int i;
    for (i = 0; i < 256; i++)
        spe_digit_val[i] = -1;
    for (i = 0; i < 10; i++)
        spe_digit_val['0' + i] = (signed char)i;
    for (i = 0; i < 6; i++) {
        spe_digit_val['a' + i] = (signed char)(10 + i);
        spe_digit_val['A' + i] = (signed char)(10 + i);
    }
    for (i = 0; i < 65536; i++) {       /* byte 0 is the first digit, whatever the byte order */
        unsigned char b[2];
        uint16_t h = (uint16_t)i;
        memcpy(b, &h, 2);
        spe_hex2[i] = (spe_digit_val[b[0]] < 0 || spe_digit_val[b[1]] < 0) ? 0x100
                      : (uint16_t)(spe_digit_val[b[0]] << 4 | spe_digit_val[b[1]]);
    }
}

PyObject *spe_parse(PyObject *self, PyObject *args)
{
    Py_buffer data, pfns, counts;
    Py_ssize_t n_ok = 0, n_bad = 0, n_zero = 0, cap;
    int has_count = 0;

    if (!PyArg_ParseTuple(args, "y*w*w*", &data, &pfns, &counts))
        return NULL;
    cap = (data.len + 1) / 2 + 1;
    if (pfns.len < cap * 8 || counts.len < cap * 8) {
        PyBuffer_Release(&data); PyBuffer_Release(&pfns); PyBuffer_Release(&counts);
        PyErr_SetString(PyExc_ValueError, "output buffers too small");
        return NULL;
    }
    {
        const unsigned char *p = data.buf, *end = p + data.len;
        uint64_t *po = pfns.buf, *co = counts.buf;
        Py_BEGIN_ALLOW_THREADS
        while (p < end) {
            const unsigned char *nl, *e, *f;
            uint64_t pfn, cnt;
            if ((f = fast_line(p, end, &pfn, &cnt, &has_count)) != NULL) {
                if (pfn) {
                    po[n_ok] = pfn;
                    co[n_ok] = cnt;
                    n_ok++;
                } else {
                    n_zero++;
                }
                p = f;
                continue;
            }
            nl = memchr(p, '\n', (size_t)(end - p));
            e = nl ? nl : end;
            if (parse_line(p, e, &pfn, &cnt, &has_count)) {
                if (pfn) {
                    po[n_ok] = pfn;
                    co[n_ok] = cnt;
                    n_ok++;
                } else {
                    n_zero++;
                }
            } else {
                n_bad++;
            }
            p = nl ? nl + 1 : end;
        }
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&data); PyBuffer_Release(&pfns); PyBuffer_Release(&counts);
    return Py_BuildValue("nnni", n_ok, n_bad, n_zero, has_count);
}


static PyMethodDef methods[] = {
    {"perf_pa", spe_perf_pa, METH_VARARGS, "perf_pa(data, memory_only, check_header, pa_out) -> (n_lines, n_header, n_other_event, n_out, consumed)"},
    {"parse", spe_parse, METH_VARARGS, "parse(data, pfns_out, counts_out) -> (n_ok, n_malformed, n_zero, has_counts)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_feedparse", NULL, -1, methods};

PyMODINIT_FUNC PyInit__feedparse(void)
{
    PyObject *m;

    spe_init_digits();
    m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (spe_add_aggregator(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
