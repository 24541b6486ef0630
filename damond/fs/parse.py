"""The kernel's value parsers, byte for byte: `kstrtoul`, `kstrtouint`, `kstrtoint`,
`kstrtobool` (lib/kstrtox.c) and `sysfs_streq` (lib/string.c).

Inputs are the bytes a sysfs store sees: one write() cut to 4096 bytes and read as a
C string (up to the first NUL; `cstring`). Failures raise `ParseError` carrying
EINVAL or ERANGE exactly where the kernel returns them.
"""
from __future__ import annotations

import errno

from damond.errors import ErrnoError

ULLONG_MAX = (1 << 64) - 1
UINT_MAX = (1 << 32) - 1
INT_MAX = (1 << 31) - 1
INT_MIN = -(1 << 31)
PAGE_SIZE = 4096


class ParseError(ErrnoError):
    """A store's parse failure: EINVAL or ERANGE."""


def cstring(data: bytes) -> bytes:
    """What a sysfs store sees of one write(): at most a page, up to the first NUL."""
    data = data[:PAGE_SIZE]
    nul = data.find(b"\0")
    return data if nul < 0 else data[:nul]


def _digit(c: int) -> int:
    if 48 <= c <= 57:
        return c - 48
    c |= 0x20
    if 97 <= c <= 102:
        return c - 87
    return 99


def _kstrtoull(s: bytes, base: int = 0) -> int:
    """_parse_integer_fixup_radix + _parse_integer + the trailing-newline rule (base 0 or 10)."""
    if base == 0:
        base = 10
        if s[:1] == b"0":
            if s[1:2] in (b"x", b"X") and len(s) > 2 and _digit(s[2]) < 16:
                base, s = 16, s[2:]
            else:
                base = 8
    res, n, overflow = 0, 0, False
    for c in s:
        d = _digit(c)
        if d >= base:
            break
        res = res * base + d
        if res > ULLONG_MAX:
            overflow = True
        n += 1
    if overflow:
        raise ParseError(errno.ERANGE, "value out of range")
    if n == 0:
        raise ParseError(errno.EINVAL, "not a number")
    rest = s[n:]
    if rest[:1] == b"\n":
        rest = rest[1:]
    if rest:
        raise ParseError(errno.EINVAL, "trailing characters")
    return res


def kstrtoul(s: bytes, base: int = 0) -> int:
    """kstrtoul(s, base, &v) on a 64-bit kernel (== kstrtoull): optional '+'; base 0 takes
    0x/0 prefixes, base 10 (the THP files) only decimal digits."""
    if s[:1] == b"+":
        s = s[1:]
    return _kstrtoull(s, base)


def kstrtouint(s: bytes, base: int = 0) -> int:
    v = kstrtoul(s, base)
    if v > UINT_MAX:
        raise ParseError(errno.ERANGE, "value out of range")
    return v


def kstrtoint(s: bytes) -> int:
    """kstrtoll then the int range check: '-' or '+' allowed once."""
    if s[:1] == b"-":
        v = -_kstrtoull(s[1:])
    else:
        v = kstrtoul(s)
    if v < INT_MIN or v > INT_MAX:
        raise ParseError(errno.ERANGE, "value out of range")
    return v


def kstrtobool(s: bytes) -> bool:
    """First one or two characters decide: e/y/t/1 true, d/n/f/0 false, on/of."""
    c0 = s[:1]
    if c0 and c0 in b"eEyYtT1":
        return True
    if c0 and c0 in b"dDnNfF0":
        return False
    if c0 and c0 in b"oO":
        c1 = s[1:2]
        if c1 and c1 in b"nN":
            return True
        if c1 and c1 in b"fF":
            return False
    raise ParseError(errno.EINVAL, "not a boolean")


def sysfs_streq(s1: bytes, s2: bytes) -> bool:
    """Exact match tolerating one trailing newline on either side."""
    if s1 == s2:
        return True
    if s1.endswith(b"\n") and s1[:-1] == s2:
        return True
    return s2.endswith(b"\n") and s2[:-1] == s1
