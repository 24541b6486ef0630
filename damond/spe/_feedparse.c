/*
 * damond.spe._feedparse: the single-pass spe_feed line parser (optional, compiled by
 * setup.py; damond/spe/feed.py holds the identical pure-Python/numpy fallback).
 *
 * parse(data, pfns_out, counts_out) -> (n_ok, n_malformed, n_zero, has_counts)
 *
 * data: bytes-like of lines separated by '\n' (a last line without '\n' is a line too,
 * an empty buffer has no lines). Each line is a PFN in kstrtoul base-0 syntax (optional
 * '+', then 0x/0X hex, leading-0 octal or decimal; no leading whitespace), optionally
 * followed by blanks and a decimal count >= 1, optionally followed by blanks/'\r'.
 * PFNs != 0 go to pfns_out (uint64), their counts to counts_out (uint64); pfn 0 counts
 * as n_zero, anything else (overflow, empty line, count 0) as n_malformed.
 * The output buffers must hold at least (len(data) + 1) / 2 + 1 entries.
 *
 * perf_pa(data, memory_only, check_header, pa_out)
 *     -> (n_lines, n_header, n_other_event, n_out, consumed)
 *
 * The spe-hist scan of `perf script` text (damond/spe/hist.py has the fallback): for each
 * line, header/blank lines (`#...`, containing `Samples for`, only blanks) are counted;
 * `Samples for` is only looked for with check_header;
 * with memory_only, lines without " memory: " are counted as other-event lines; every
 * other line yields the strtoul(last token, 16) value (optional 0x; 0 when it does not
 * parse fully) in pa_out, in line order. It stops when pa_out is full; `consumed` says
 * how many bytes of data were scanned (call again with the rest).
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static signed char digit_val[256];

static inline int is_blank(unsigned char c) { return c == ' ' || c == '\t' || c == '\r'; }

/* Parse one line [p, e). Returns 1 ok, 0 malformed. */
static inline int parse_line(const unsigned char *p, const unsigned char *e,
                             uint64_t *pfn, uint64_t *count, int *has_count)
{
    uint64_t v = 0;
    unsigned base = 10;
    const unsigned char *q;

    if (p < e && *p == '+')
        p++;
    if (p >= e)
        return 0;
    if (p[0] == '0') {
        if (p + 2 < e && (p[1] | 0x20) == 'x' && digit_val[p[2]] >= 0) {
            base = 16;
            p += 2;
        } else {
            base = 8;
        }
    }
    q = p;
    while (p < e) {
        int d = digit_val[*p];
        if (d < 0 || (unsigned)d >= base)
            break;
        if (v > (UINT64_MAX - (uint64_t)d) / base)
            return 0;               /* -ERANGE */
        v = v * base + (uint64_t)d;
        p++;
    }
    if (p == q)
        return 0;
    *pfn = v;
    *count = 1;
    if (p == e)
        return 1;
    if (!is_blank(*p))
        return 0;
    while (p < e && (*p == ' ' || *p == '\t'))
        p++;
    if (p < e && *p >= '0' && *p <= '9') {
        uint64_t c = 0;
        while (p < e && *p >= '0' && *p <= '9') {
            uint64_t d = (uint64_t)(*p - '0');
            if (c > (UINT64_MAX - d) / 10)
                return 0;
            c = c * 10 + d;
            p++;
        }
        if (c == 0)
            return 0;
        *count = c;
        *has_count = 1;
    }
    while (p < e && is_blank(*p))
        p++;
    return p == e;
}

static PyObject *parse(PyObject *self, PyObject *args)
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
            const unsigned char *nl = memchr(p, '\n', (size_t)(end - p));
            const unsigned char *e = nl ? nl : end;
            uint64_t pfn, cnt;
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

/* " memory: " in [p, e): look at each ':' only (a perf line has two or three). */
static inline int has_memory_event(const unsigned char *p, const unsigned char *e)
{
    const unsigned char *c = p;
    while ((c = memchr(c, ':', (size_t)(e - c))) != NULL) {
        if (c - p >= 7 && c + 1 < e && c[1] == ' ' && memcmp(c - 7, " memory", 7) == 0)
            return 1;
        c++;
    }
    return 0;
}

static PyObject *perf_pa(PyObject *self, PyObject *args)
{
    Py_buffer data, out;
    int memory_only, check_hdr;
    Py_ssize_t n_lines = 0, n_hdr = 0, n_other = 0, n_out = 0, cap, consumed;

    if (!PyArg_ParseTuple(args, "y*ppw*", &data, &memory_only, &check_hdr, &out))
        return NULL;
    cap = out.len / 8;
    {
        const unsigned char *p = data.buf, *end = p + data.len;
        uint64_t *o = out.buf;
        Py_BEGIN_ALLOW_THREADS
        while (p < end && n_out < cap) {
            const unsigned char *nl = memchr(p, '\n', (size_t)(end - p));
            const unsigned char *e = nl ? nl : end, *s = p, *t;
            uint64_t v = 0;
            int ok = 1;
            n_lines++;
            while (s < e && (*s == ' ' || *s == '\t' || *s == '\r'))
                s++;
            if (s == e || *p == '#' || (check_hdr && memmem(p, (size_t)(e - p), "Samples for", 11))) {
                n_hdr++;
                goto next;
            }
            if (memory_only && !has_memory_event(p, e)) {
                n_other++;
                goto next;
            }
            t = e;
            while (t > s && (t[-1] == ' ' || t[-1] == '\t' || t[-1] == '\r'))
                t--;
            s = t;
            while (s > p && s[-1] != ' ' && s[-1] != '\t')
                s--;
            if (t - s > 2 && s[0] == '0' && (s[1] | 0x20) == 'x')
                s += 2;
            if (s == t || t - s > 16)
                ok = 0;
            for (; ok && s < t; s++) {
                int d = digit_val[*s];
                if (d < 0) { ok = 0; break; }
                v = (v << 4) | (uint64_t)d;
            }
            o[n_out++] = ok ? v : 0;
next:
            p = nl ? nl + 1 : end;
        }
        Py_END_ALLOW_THREADS
        consumed = (Py_ssize_t)(p - (const unsigned char *)data.buf);
    }
    PyBuffer_Release(&data); PyBuffer_Release(&out);
    return Py_BuildValue("nnnnn", n_lines, n_hdr, n_other, n_out, consumed);
}

static PyMethodDef methods[] = {
    {"perf_pa", perf_pa, METH_VARARGS, "perf_pa(data, memory_only, check_header, pa_out) -> (n_lines, n_header, n_other_event, n_out, consumed)"},
    {"parse", parse, METH_VARARGS, "parse(data, pfns_out, counts_out) -> (n_ok, n_malformed, n_zero, has_counts)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_feedparse", NULL, -1, methods};

PyMODINIT_FUNC PyInit__feedparse(void)
{
    int i;
    for (i = 0; i < 256; i++)
        digit_val[i] = -1;
    for (i = 0; i < 10; i++)
        digit_val['0' + i] = (signed char)i;
    for (i = 0; i < 6; i++) {
        digit_val['a' + i] = (signed char)(10 + i);
        digit_val['A' + i] = (signed char)(10 + i);
    }
    return PyModule_Create(&module);
}
