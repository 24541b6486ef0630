/*
 * damond.spe._feedparse.perf_pa: the spe-hist scan of `perf script` text
 * (damond/spe/hist.py has the fallback).
 *
 * perf_pa(data, memory_only, check_header, pa_out[, raw_out])
 *     -> (n_lines, n_header, n_other_event, n_out, consumed)
 *
 * For each line, header/blank lines (`#...`, perf's `[Warning: ]Samples for ...` message:
 * starting with S or W after blanks and containing `Samples for`; only blanks) are counted;
 * `Samples for` is only looked for with check_header; with memory_only, lines without
 * " memory: " are counted as other-event lines; every other line yields the strtoul(last
 * token, 16) value (optional 0x; 0 when it does not parse fully) in pa_out, in line order.
 * It stops when pa_out is full; `consumed` says how many bytes of data were scanned (call
 * again with the rest). With raw_out (a writable byte buffer, at least one byte per pa_out
 * slot), raw_out[i] says whether the line of pa_out[i] contains `arm_spe_0` (a raw SPE
 * event name: spe_hist.c's loads/stores look at it). The GIL is released while scanning.
 */
#define _GNU_SOURCE
#include "feedparse.h"

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

PyObject *spe_perf_pa(PyObject *self, PyObject *args)
{
    Py_buffer data, out, raw = {0};
    int memory_only, check_hdr;
    Py_ssize_t n_lines = 0, n_hdr = 0, n_other = 0, n_out = 0, cap, consumed;

    if (!PyArg_ParseTuple(args, "y*ppw*|w*", &data, &memory_only, &check_hdr, &out, &raw))
        return NULL;
    cap = out.len / 8;
    if (raw.buf && raw.len < cap)
        cap = raw.len;
    {
        const unsigned char *p = data.buf, *end = p + data.len;
        uint64_t *o = out.buf;
        unsigned char *r = raw.buf;
        Py_BEGIN_ALLOW_THREADS
        while (p < end && n_out < cap) {
            const unsigned char *nl = memchr(p, '\n', (size_t)(end - p));
            const unsigned char *e = nl ? nl : end, *s = p, *t;
            uint64_t v = 0;
            int ok = 1;
            n_lines++;
            while (s < e && (*s == ' ' || *s == '\t' || *s == '\r'))
                s++;
            if (s == e || *p == '#' || (check_hdr && (*s == 'S' || *s == 'W') && memmem(s, (size_t)(e - s), "Samples for", 11))) {
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
            if (r)
                r[n_out] = memmem(p, (size_t)(e - p), "arm_spe_0", 9) != NULL;
            o[n_out++] = ok ? v : 0;
next:
            p = nl ? nl + 1 : end;
        }
        Py_END_ALLOW_THREADS
        consumed = (Py_ssize_t)(p - (const unsigned char *)data.buf);
    }
    PyBuffer_Release(&data); PyBuffer_Release(&out);
    if (raw.buf)
        PyBuffer_Release(&raw);
    return Py_BuildValue("nnnnn", n_lines, n_hdr, n_other, n_out, consumed);
}
