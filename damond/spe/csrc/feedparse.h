/*
 * damond.spe._feedparse, shared part: the spe_feed line grammar (feedparse.c, aggregator.c
 * and perfscan.c include this). A line is a PFN in kstrtoul base-0 syntax (optional '+',
 * then 0x/0X hex, leading-0 octal or decimal; no leading whitespace), optionally followed
 * by blanks and a decimal count >= 1, optionally followed by blanks/'\r'.
 * damond/spe/feed.py holds the identical pure-Python fallback.
 */
#ifndef DAMOND_SPE_FEEDPARSE_H
#define DAMOND_SPE_FEEDPARSE_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* hex value of each byte, -1 when not a hex digit (filled by spe_init_digits) */
extern signed char spe_digit_val[256];
#define digit_val spe_digit_val
/* the value of two hex digits (first byte low), 0x100 when either is not one */
extern uint16_t spe_hex2[65536];
void spe_init_digits(void);

/* Module parts defined in the other files. */
PyObject *spe_parse(PyObject *self, PyObject *args);
PyObject *spe_perf_pa(PyObject *self, PyObject *args);
int spe_add_aggregator(PyObject *module);

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

/* Bit i set: b[i] == '\n', for the (up to) 64 bytes of [b, end). Scanning lines from these
 * masks keeps the start of the next line off the parse's dependency chain (a line's
 * digits are parsed while the next ones are already found). */
#if defined(__SSE2__)
#include <emmintrin.h>
static inline uint64_t nl_mask16(const unsigned char *b)
{
    return (uint64_t)(uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)b),
                                                                 _mm_set1_epi8('\n')));
}

static inline uint64_t nl_mask64_full(const unsigned char *b)
{
    return nl_mask16(b) | nl_mask16(b + 16) << 16 | nl_mask16(b + 32) << 32 | nl_mask16(b + 48) << 48;
}
#else
static inline uint64_t nl_mask64_full(const unsigned char *b)
{
    uint64_t m = 0;
    int i;
    for (i = 0; i < 64; i++)
        m |= (uint64_t)(b[i] == '\n') << i;
    return m;
}
#endif

static inline uint64_t nl_mask64(const unsigned char *b, const unsigned char *end)
{
    unsigned char tail[64];
    Py_ssize_t n = end - b;

    if (n >= 64)
        return nl_mask64_full(b);
    memset(tail, 0, sizeof(tail));
    memcpy(tail, b, (size_t)n);
    return nl_mask64_full(tail);
}

/* The value of the n (1..16) hex digits at q into *v; 0 when one is not a hex digit.
 * Two digits per table load. */
static inline int hex_digits(const unsigned char *q, unsigned n, uint64_t *v)
{
    uint64_t x = 0;
    unsigned bad = 0, i = 0;

    if (n & 1) {
        int d = digit_val[q[0]];
        bad = (unsigned)d & 0x100;
        x = (unsigned)d & 15;
        i = 1;
    }
    for (; i < n; i += 2) {
        uint16_t h, t;
        memcpy(&h, q + i, 2);
        t = spe_hex2[h];
        bad |= t;
        x = x << 8 | (t & 0xFF);
    }
    *v = x;
    return !(bad & 0x100);
}

/* The common shapes in one pass without memchr: `0x<1..16 hex>` or `<1-9><..18 digits>`,
 * optionally one or more blanks and a decimal count 1..19 digits != 0, then '\n'. Returns
 * the start of the next line, or NULL when the line must take the general path (which
 * gives the same result for these shapes). */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define SPE_SWAR 1
#define ONES 0x0101010101010101ULL
#define HIGH 0x8080808080808080ULL

static inline uint64_t load64(const unsigned char *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

/* The number of leading hex digits (0..8) in the 8 bytes of w (first byte lowest). */
static inline unsigned hex_run8(uint64_t w)
{
    uint64_t x = w & 0x7F * ONES, l = x | 0x20 * ONES;      /* l: 'A'-'F' folded to 'a'-'f' */
    uint64_t dig = (x + 0x50 * ONES) & ~(x + 0x46 * ONES);   /* >= '0' and <= '9' */
    uint64_t let = (l + 0x1F * ONES) & ~(l + 0x19 * ONES);   /* >= 'a' and <= 'f' */
    uint64_t bad = ~((dig | let) & ~w) & HIGH;
    return bad ? (unsigned)__builtin_ctzll(bad) >> 3 : 8;
}

/* The value of the first n (1..8) hex digits of w. */
static inline uint64_t hex_val8(uint64_t w, unsigned n)
{
    uint64_t v = (w & 0x0F * ONES) + ((w >> 6) & ONES) * 9;  /* nibble per byte */
    v = __builtin_bswap64(v << ((8 - n) * 8));               /* last digit in byte 0 */
    v = (v | (v >> 4)) & 0x00FF00FF00FF00FFULL;
    v = (v | (v >> 8)) & 0x0000FFFF0000FFFFULL;
    return (v | (v >> 16)) & 0xFFFFFFFFULL;
}
#endif

/* The common shapes in one pass without memchr: `0x<1..16 hex>` or `<1-9><..18 digits>`,
 * optionally one or more blanks and a decimal count 1..19 digits != 0, then '\n'. Returns
 * the start of the next line, or NULL when the line must take the general path (which
 * gives the same result for these shapes). */
static inline __attribute__((always_inline)) const unsigned char *fast_line(const unsigned char *p, const unsigned char *end,
                                             uint64_t *pfn, uint64_t *count, int *has_count)
{
    const unsigned char *q, *lim;
    uint64_t v = 0, c;
    int d;

    if (end - p >= 4 && p[0] == '0' && (p[1] | 0x20) == 'x') {
        q = p + 2;
#ifdef SPE_SWAR
        if (end - q >= 16) {            /* 8 digits per load */
            uint64_t w = load64(q);
            unsigned n = hex_run8(w);
            if (n == 0)
                return NULL;
            v = hex_val8(w, n);
            if (n == 8 && (n = hex_run8(w = load64(q + 8))) > 0) {
                v = v << (4 * n) | hex_val8(w, n);
                q += 8;
            }
            q += n;
            goto hex_done;
        }
#endif
        lim = end - q > 16 ? q + 16 : end;
        while (q < lim && (d = digit_val[*q]) >= 0) {
            v = (v << 4) | (uint64_t)d;
            q++;
        }
        if (q == p + 2)
            return NULL;
#ifdef SPE_SWAR
hex_done:;
#endif
    } else if (p < end && *p >= '1' && *p <= '9') {
        q = p;
        lim = end - q > 19 ? q + 19 : end;
        while (q < lim && *q >= '0' && *q <= '9') {
            v = v * 10 + (uint64_t)(*q - '0');
            q++;
        }
    } else {
        return NULL;
    }
    if (q >= end)
        return NULL;
    if (*q == '\n') {
        *pfn = v;
        *count = 1;
        return q + 1;
    }
    if (*q != ' ')
        return NULL;
    while (q < end && *q == ' ')
        q++;
    p = q;
    lim = end - q > 19 ? q + 19 : end;
    c = 0;
    while (q < lim && *q >= '0' && *q <= '9') {
        c = c * 10 + (uint64_t)(*q - '0');
        q++;
    }
    if (q == p || c == 0 || q >= end || *q != '\n')
        return NULL;
    *pfn = v;
    *count = c;
    *has_count = 1;
    return q + 1;
}
#endif
