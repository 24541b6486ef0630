"""kstrto*/kstrtobool/sysfs_streq as lib/kstrtox.c and lib/string.c define them."""
import errno

import pytest

from damond.fs.parse import ParseError, cstring, kstrtobool, kstrtoint, kstrtoul, kstrtouint, sysfs_streq

U64 = (1 << 64) - 1


@pytest.mark.parametrize("s,v", [
    (b"0", 0), (b"1", 1), (b"1\n", 1), (b"+5", 5), (b"0x10", 16), (b"0X1f\n", 31), (b"010", 8), (b"011", 9),
    (b"18446744073709551615", U64), (b"0xffffffffffffffff", U64), (b"00", 0),
])
def test_kstrtoul_ok(s, v):
    assert kstrtoul(s) == v


@pytest.mark.parametrize("s,err", [
    (b"", errno.EINVAL), (b"\n", errno.EINVAL), (b"1\n\n", errno.EINVAL), (b" 1", errno.EINVAL),
    (b"1 ", errno.EINVAL), (b"-1", errno.EINVAL), (b"12abc", errno.EINVAL), (b"0x", errno.EINVAL),
    (b"08", errno.EINVAL), (b"++1", errno.EINVAL), (b"1.5", errno.EINVAL),
    (b"18446744073709551616", errno.ERANGE), (b"0x10000000000000000", errno.ERANGE),
    (b"99999999999999999999999abc", errno.ERANGE),
])
def test_kstrtoul_errors(s, err):
    with pytest.raises(ParseError) as e:
        kstrtoul(s)
    assert e.value.errno == err


def test_kstrtouint_range():
    assert kstrtouint(b"4294967295") == (1 << 32) - 1
    with pytest.raises(ParseError) as e:
        kstrtouint(b"4294967296")
    assert e.value.errno == errno.ERANGE


@pytest.mark.parametrize("s,v", [(b"-1", -1), (b"+7", 7), (b"-2147483648", -(1 << 31)), (b"2147483647", (1 << 31) - 1),
                                 (b"-0x10", -16), (b"-0", 0)])
def test_kstrtoint_ok(s, v):
    assert kstrtoint(s) == v


@pytest.mark.parametrize("s,err", [(b"2147483648", errno.ERANGE), (b"-2147483649", errno.ERANGE),
                                   (b"-+1", errno.EINVAL), (b"--1", errno.EINVAL), (b"-", errno.EINVAL)])
def test_kstrtoint_errors(s, err):
    with pytest.raises(ParseError) as e:
        kstrtoint(s)
    assert e.value.errno == err


@pytest.mark.parametrize("s,v", [(b"Y", True), (b"yes", True), (b"True", True), (b"1", True), (b"true\n", True),
                                 (b"on", True), (b"ON", True), (b"enable", True), (b"N", False), (b"No", False),
                                 (b"False", False), (b"0", False), (b"off", False), (b"Of", False),
                                 (b"disable", False), (b"nonsense", False)])
def test_kstrtobool_ok(s, v):
    assert kstrtobool(s) is v


@pytest.mark.parametrize("s", [b"", b"\n", b"o", b"ox", b"2", b" y", b"x"])
def test_kstrtobool_errors(s):
    with pytest.raises(ParseError) as e:
        kstrtobool(s)
    assert e.value.errno == errno.EINVAL


@pytest.mark.parametrize("s,ok", [(b"on", True), (b"on\n", True), (b"ON", False), (b" on", False),
                                  (b"on \n", False), (b"on\n\n", False), (b"o", False), (b"", False)])
def test_sysfs_streq(s, ok):
    assert sysfs_streq(s, b"on") is ok


def test_cstring_cuts_at_nul_and_page():
    assert cstring(b"12\x00junk") == b"12"
    assert len(cstring(b"7" * 5000)) == 4096
