"""Arbitrary bytes (empty, huge, binary, NUL, unicode, 4097+) written to every writable
file of a populated tree through the mount: the errno and read-back follow an
independent reference of the kernel parsers, no other file changes, the daemon lives."""
import errno
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import DamondProcess, populate

U64, U32, I32 = (1 << 64) - 1, (1 << 32) - 1, (1 << 31) - 1
INT_RE = re.compile(rb"(0[xX](?=[0-9a-fA-F])[0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
KEYWORDS = {
    "operations": ["vaddr", "fvaddr", "paddr"],
    "action": ["willneed", "cold", "pageout", "hugepage", "nohugepage", "collapse", "mthp_split", "split",
               "lru_prio", "lru_deprio", "migrate_hot", "migrate_cold", "stat"],
    "metric": ["none", "free_mem_rate"],
    "target_metric": ["user_input", "some_mem_psi_us", "node_mem_used_bp", "node_mem_free_bp"],
}
FILTER_TYPES = {"filters": ["anon", "active", "memcg", "young", "hugepage_size", "unmapped", "addr", "target"],
                "core_filters": ["addr", "target"],
                "ops_filters": ["anon", "active", "memcg", "young", "hugepage_size", "unmapped"]}
U32_FILES = {"sz_permil", "nr_accesses_permil", "age_permil", "refresh_ms", "id", "weight", "target_order",
             "hot_threshold"}
INT_FILES = {"pid_target", "target_nid", "nid", "damon_target_idx"}
BOOL_FILES = {"matching", "allow"}
STRING_FILES = {"memcg_path"}
ALWAYS_EINVAL = {"pid_target", "ms", "bytes", "reset_interval_ms"}


def ref_int(s: bytes, lo: int, hi: int):
    """Reference kstrto*: value or errno."""
    neg = False
    if lo < 0 and s[:1] == b"-":
        neg, s = True, s[1:]
    elif s[:1] == b"+":
        s = s[1:]
    m = INT_RE.match(s)
    if not m:
        return errno.EINVAL, None
    t = m.group(1)
    v = int(t, 16) if t[:2].lower() == b"0x" else int(t, 8) if t.startswith(b"0") else int(t)
    if v > U64:
        return errno.ERANGE, None
    if s[m.end():] not in (b"", b"\n"):
        return errno.EINVAL, None
    v = -v if neg else v
    if v < lo or v > hi:
        return errno.ERANGE, None
    return 0, v


def expected(rel: str, data: bytes):
    """(errno, read-back text or None) for one write of `data` to `rel`."""
    s = data[:4096].split(b"\0", 1)[0]
    name, parent = Path(rel).name, Path(rel).parent.parent.name
    if name in STRING_FILES:
        return 0, (s + b"\n")[:4095]         # sysfs_emit("%s\n") fills at most PAGE_SIZE - 1 bytes
    if name in BOOL_FILES:
        if s[:1] and s[:1] in b"eEyYtT1" or s[:2].lower() == b"on":
            return 0, b"Y\n"
        if s[:1] and s[:1] in b"dDnNfF0" or s[:2].lower() == b"of":
            return 0, b"N\n"
        return errno.EINVAL, None
    words = FILTER_TYPES.get(parent) if name == "type" else KEYWORDS.get(name)
    if words is not None:
        for w in words:
            if s in (w.encode(), w.encode() + b"\n"):
                return 0, w.encode() + b"\n"
        return errno.EINVAL, None
    lo, hi = (-(1 << 31), I32) if name in INT_FILES else (0, U32) if name in U32_FILES else (0, U64)
    err, v = ref_int(s, lo, hi)
    if err:
        return (errno.EINVAL if name in ALWAYS_EINVAL else err), None
    if (name == "addr_unit" and v == 0) or (name == "target_order" and (v == 1 or v > 9)) or \
            (name == "hot_threshold" and v > 100):
        return errno.EINVAL, None
    return 0, b"%d\n" % v


@pytest.fixture(scope="module")
def populated(tmp_path_factory):
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.skip("needs root and /dev/fuse")
    with DamondProcess(tmp_path_factory.mktemp("prop") / "sys", fake=True) as d:
        populate(d.admin, 1)
        files = sorted(str(p.relative_to(d.admin)) for p in d.admin.rglob("*")
                       if p.is_file() and p.stat().st_mode & 0o200 and not p.name.startswith("nr_")
                       and p.name != "state")
        yield d, files, {"snap": snapshot(d.admin)}


def snapshot(admin: Path) -> dict:
    out = {}
    for p in admin.rglob("*"):
        if p.is_file() and p.stat().st_mode & 0o400:
            out[str(p.relative_to(admin))] = p.read_bytes()
    return out


DATA = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=20).map(lambda t: t.encode()),
    st.integers(min_value=-(1 << 70), max_value=1 << 70).map(lambda i: str(i).encode()),
    st.tuples(st.sampled_from([b"", b"+", b"-", b"0x", b"0", b" "]), st.integers(0, 1 << 66),
              st.sampled_from([b"", b"\n", b"\n\n", b"\0junk", b" "])).map(lambda t: t[0] + str(t[1]).encode() + t[2]),
    st.sampled_from([b"Y", b"on", b"Off", b"anon", b"addr\n", b"split", b"/cg\n", b"paddr", b"free_mem_rate"]),
    st.integers(4097, 6000).map(lambda n: b"7" * n),
    st.integers(4097, 6000).map(lambda n: b"1\n" + b"\xff" * n),
)


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_arbitrary_writes(populated, data):
    d, files, last = populated
    rel = data.draw(st.sampled_from(files), label="file")
    payload = data.draw(DATA, label="bytes")
    before = last["snap"]
    err, back = expected(rel, payload)
    fd = os.open(d.admin / rel, os.O_WRONLY)
    try:
        n = os.write(fd, payload)
        got = 0
        assert n == min(len(payload), 4096)
    except OSError as e:
        got = e.errno
    finally:
        os.close(fd)
    assert got == (err if payload else 0), (rel, payload[:80])
    after = last["snap"] = snapshot(d.admin)
    if got == 0 and payload:
        assert after[rel] == back
    else:
        assert after[rel] == before[rel]
    assert {k: v for k, v in after.items() if k != rel} == {k: v for k, v in before.items() if k != rel}
    assert d.alive()


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_arbitrary_writes_at_length(populated, data):
    """The same fuzz at 100x the examples (slow: `python -m pytest -m slow`)."""
    test_arbitrary_writes.hypothesis.inner_test(populated, data)
