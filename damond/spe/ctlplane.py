"""The v2 split control plane in userspace, as the RFC's damon_spe_ctl.sh drives it: SPE
histogram -> sparse THPs -> PFN-to-VA through /proc/PID/pagemap -> DAMOS `addr` filters
on a `split` scheme -> `commit`, with `stats/max_nr_snapshots` bounding every round to a
fixed number of scheme applications (7.0's deterministic mode).

Owns the decision (which 2 MiB ranges to split) and the writes that hand it to DAMON.
Knows nothing of how files are reached: everything goes through a `Files` object (`read`
of a text file, `write` of one value as `echo` does, `pread` of binary pagemap, `exists`),
so the same code runs on a mount (`MountFiles`, `damond spe-ctl`) and on a reproduce
`Session` (`SessionFiles`, the `v2-addr-filter` design). The histogram comes in as
(subpage PFN, count) arrays: `hist.HistBuilder` on `perf script` text, `parse_histogram`
on spe-hist's outputs, or an emulated sampler's records.

Differences from damon_spe_ctl.sh, on purpose: the kdamond is kept running between rounds
(`commit` of new filters plus a raised `max_nr_snapshots`, instead of off/on for 60 s);
filters go to `core_filters` (`filters/` is deprecated); a round with no sparse THP
installs one empty `addr` range that allows nothing (zero filters would let the scheme
split every THP); adjacent ranges are merged even when that leaves one filter (damond's
filter has no sz_tried=0 corner).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from damond.mm.procfs import PM_PFN_MASK, PM_PRESENT     # /proc/PID/pagemap's entry format
from damond.spe import hist

PAGE_SIZE = 4096
PMD_SIZE = 2 << 20
THP_PAGES = 512
ADMIN = "kernel/mm/damon/admin"
ULONG_MAX = (1 << 64) - 1
UINT_MAX = (1 << 32) - 1
SPLIT_ACTIONS = ("split", "mthp_split")
AUTO = -1


class Files(Protocol):
    """How the control plane reaches the sysfs tree and procfs; paths are relative to the
    root that holds `kernel/mm/damon/admin` (`proc/PID/...` for procfs)."""
    def read(self, rel: str) -> str: ...
    def write(self, rel: str, value) -> None: ...          # one write(2) of f"{value}\n"
    def pread(self, rel: str, offset: int, size: int) -> bytes: ...
    def exists(self, rel: str) -> bool: ...


class MountFiles:
    """A damond mount (or `damond exec`'s /sys and /proc): `root` holds kernel/..., `proc`
    is the procfs directory (default ROOT/proc). Errors are OSError with the errno."""

    def __init__(self, root: str, proc: str | None = None):
        self.root = root
        self.proc = proc if proc is not None else os.path.join(root, "proc")

    def _path(self, rel: str) -> str:
        rel = rel.strip("/")
        if rel.startswith("proc/"):
            return os.path.join(self.proc, rel[len("proc/"):])
        return os.path.join(self.root, rel)

    def read(self, rel: str) -> str:
        with open(self._path(rel)) as f:
            return f.read()

    def write(self, rel: str, value) -> None:
        path = self._path(rel)
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, f"{value}\n".encode())
        except OSError as e:
            raise OSError(e.errno, e.strerror, path) from None
        finally:
            os.close(fd)

    def pread(self, rel: str, offset: int, size: int) -> bytes:
        fd = os.open(self._path(rel), os.O_RDONLY)
        try:
            return os.pread(fd, size, offset)
        finally:
            os.close(fd)

    def exists(self, rel: str) -> bool:
        return os.path.exists(self._path(rel))


class SessionFiles:
    """A reproduce `Session`: the same reads and writes, on virtual time."""

    def __init__(self, session):
        self.s = session

    def read(self, rel: str) -> str:
        return self.s.read(rel)

    def write(self, rel: str, value) -> None:
        self.s.write(rel, value)

    def pread(self, rel: str, offset: int, size: int) -> bytes:
        return self.s.pread(rel, offset, size)

    def exists(self, rel: str) -> bool:
        return self.s.exists(rel)


# --- histogram -> sparse THPs -------------------------------------------------------------

_CAND = re.compile(r"PFN 0[xX]([0-9a-fA-F]+)")
_FEED = re.compile(r"^\s*(?:0[xX])?([0-9a-fA-F]+)\s+(\d+)\s*$")


def parse_histogram(text: str) -> tuple[np.ndarray, np.ndarray] | list[int]:
    """spe-hist output or `perf script` text.

    Returns:
        (pfns, counts) of subpages for `perf script` text or spe-hist --feed lines
        (`0xPFN COUNT`); a list of THP PFNs for spe-hist --threshold candidate lines
        (`PFN 0x.. hot_fraction:P total:T`, the decision already taken).
    """
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if any(ln.lstrip().startswith("PFN 0") for ln in lines):
        out = []
        for ln in lines:
            m = _CAND.search(ln)
            if m and int(m.group(1), 16):
                out.append(int(m.group(1), 16) & ~(THP_PAGES - 1))
        return out
    if lines and all(_FEED.match(ln) for ln in lines):
        pairs = [_FEED.match(ln).groups() for ln in lines]   # type: ignore[union-attr]
        pfns = np.array([int(p, 16) for p, _ in pairs], dtype=np.uint64)
        counts = np.array([int(c) for _, c in pairs], dtype=np.uint64)
        return _sum_by_pfn(pfns, counts)
    b = hist.HistBuilder()
    data = text.encode()
    b.feed(data, len(data))
    return b.subpages()


def _sum_by_pfn(pfns: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    u, inv = np.unique(pfns, return_inverse=True)
    return u, np.bincount(inv, weights=counts.astype(np.float64), minlength=len(u)).astype(np.uint64)


def records_histogram(pas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(subpage PFNs, counts) of sampled physical addresses (PA 0: not recorded, skipped)."""
    pas = np.asarray(pas, dtype=np.uint64)
    pas = pas[pas != 0]
    return _sum_by_pfn(pas >> np.uint64(12), np.ones(len(pas), np.uint64))


def sparse_thps(pfns: np.ndarray, counts: np.ndarray, threshold: int) -> list[int]:
    """THP-aligned PFNs whose signal-filtered hot percent (subpages with count >=
    max(peak // 10, 1), over 512) is below `threshold`: spe_hist --threshold's choice."""
    t = hist.thp_table(np.asarray(pfns, np.uint64), np.asarray(counts, np.uint64))
    pct = t.hot * np.uint64(100) // np.uint64(THP_PAGES)
    return [int(x) for x in t.thp[pct < np.uint64(threshold)].tolist()]


def choose(hist_or_thps, threshold: int) -> list[int]:
    """The THPs to split: a list of THP PFNs as given, or the sparse ones of a histogram."""
    if isinstance(hist_or_thps, list):
        return hist_or_thps
    pfns, counts = hist_or_thps
    return sparse_thps(pfns, counts, threshold)


def hot_bytes(pfns: np.ndarray, counts: np.ndarray) -> int:
    """Bytes of the subpages the histogram calls hot (count >= max(peak // 10, 1) of their THP)."""
    t = hist.thp_table(np.asarray(pfns, np.uint64), np.asarray(counts, np.uint64))
    return int(t.hot.sum()) * PAGE_SIZE


# --- PFN -> VA (pfn_to_va.c) ----------------------------------------------------------------

def maps_ranges(maps_text: str) -> list[tuple[int, int]]:
    out = []
    for ln in maps_text.splitlines():
        m = re.match(r"([0-9a-f]+)-([0-9a-f]+)\s", ln)
        if m:
            out.append((int(m.group(1), 16), int(m.group(2), 16)))
    return out


def pfn_to_va(files: Files, pid: int, thp_pfns: list[int], start: int = 0, end: int = ULONG_MAX
              ) -> list[tuple[int, int]]:
    """VA ranges [va, va + 2 MiB) of `pid` whose first 4 KiB page is backed by one of the
    THP-aligned `thp_pfns`, as pfn_to_va.c finds them: every VMA of >= 2 MiB, probed at
    each 2 MiB-aligned address (one pagemap entry per probe, read per VMA in one pread),
    kept within [start, end). Sorted by address."""
    want = np.array(sorted(set(thp_pfns)), dtype=np.uint64)
    if not len(want):
        return []
    out: list[tuple[int, int]] = []
    for vs, ve in maps_ranges(files.read(f"proc/{pid}/maps")):
        if ve - vs < PMD_SIZE:
            continue
        a0 = max(vs & ~(PMD_SIZE - 1), start & ~(PMD_SIZE - 1))
        a1 = min(ve, end)
        if a0 >= a1:
            continue
        npages = (a1 - a0 + PAGE_SIZE - 1) // PAGE_SIZE
        raw = files.pread(f"proc/{pid}/pagemap", (a0 // PAGE_SIZE) * 8, npages * 8)
        ent = np.frombuffer(raw, dtype="<u8")[::THP_PAGES]
        pres = (ent & np.uint64(PM_PRESENT)) != 0
        pfn = (ent & np.uint64(PM_PFN_MASK)) & ~np.uint64(THP_PAGES - 1)
        hit = pres & np.isin(pfn, want)
        for k in np.flatnonzero(hit).tolist():
            va = a0 + k * PMD_SIZE
            out.append((va, va + PMD_SIZE))
    return sorted(set(out))


def merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Adjacent ranges joined (damon_spe_ctl.sh's awk merge)."""
    out: list[list[int]] = []
    for s, e in sorted(ranges):
        if out and s == out[-1][1]:
            out[-1][1] = e
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


# --- DAMON sysfs ------------------------------------------------------------------------------

@dataclass
class Params:
    pid: int
    kdamond: int = 0
    scheme: int = 0
    threshold: int = 30            # hot percent below which a THP is split (spe_hist --threshold)
    target_order: int = 2
    max_filters: int = 256
    snapshots: int = -1            # scheme applications per round (max_nr_snapshots step); AUTO, 0: no limit
    apply_interval_us: int = 5000  # the split scheme's apply interval (0: the aggregation interval)
    start: int = 0                 # monitoring region; (0, 0): vaddr's own three regions
    end: int = 0
    sample_us: int = 5000
    aggr_us: int = 100000


@dataclass
class Round:
    """What one round decided and did."""
    candidates: int = 0            # sparse THPs in the histogram
    ranges: list = field(default_factory=list)   # merged VA ranges installed as filters
    unresolved: int = 0            # candidates with no VA in pid (another process's, or gone)
    capped: int = 0                # ranges dropped by max_filters
    max_nr_snapshots: int = 0      # the limit set this round (0: the level has none)
    started: bool = False          # the kdamond was turned on by this round


def _kd(p: Params) -> str:
    return f"{ADMIN}/kdamonds/{p.kdamond}"


def _sch(p: Params) -> str:
    return f"{_kd(p)}/contexts/0/schemes/{p.scheme}"


def has_snapshot_limit(files: Files, p: Params) -> bool:
    return files.exists(f"{_sch(p)}/stats/max_nr_snapshots")


def stage(files: Files, p: Params) -> None:
    """Stage kdamond p.kdamond (off) for pid: one vaddr context, one target, a split
    scheme with the widest access pattern (the filters pick the memory). Mirrors
    damon_spe_ctl.sh's step 4 (action `split`, else `mthp_split`)."""
    k = f"{ADMIN}/kdamonds"
    if int(files.read(f"{k}/nr_kdamonds").split()[0]) <= p.kdamond:
        if p.kdamond != 0:
            raise ValueError(f"kdamonds/{p.kdamond} does not exist")
        files.write(f"{k}/nr_kdamonds", 1)
    c = f"{_kd(p)}/contexts"
    files.write(f"{c}/nr_contexts", 1)
    files.write(f"{c}/0/operations", "vaddr")
    m = f"{c}/0/monitoring_attrs/intervals"
    files.write(f"{m}/sample_us", p.sample_us)
    files.write(f"{m}/aggr_us", p.aggr_us)
    files.write(f"{c}/0/targets/nr_targets", 1)
    files.write(f"{c}/0/targets/0/pid_target", p.pid)
    if p.end > p.start:
        files.write(f"{c}/0/targets/0/regions/nr_regions", 1)
        files.write(f"{c}/0/targets/0/regions/0/start", p.start)
        files.write(f"{c}/0/targets/0/regions/0/end", p.end)
    files.write(f"{c}/0/schemes/nr_schemes", p.scheme + 1)
    s = _sch(p)
    for action in SPLIT_ACTIONS:
        try:
            files.write(f"{s}/action", action)
            break
        except OSError:
            continue
    else:
        raise ValueError("neither split nor mthp_split is an action of this tree")
    files.write(f"{s}/target_order", p.target_order)
    files.write(f"{s}/apply_interval_us", p.apply_interval_us)
    for key, hi in (("sz", ULONG_MAX), ("nr_accesses", UINT_MAX), ("age", UINT_MAX)):
        files.write(f"{s}/access_pattern/{key}/min", 0)
        files.write(f"{s}/access_pattern/{key}/max", hi)


def install_filters(files: Files, p: Params, ranges: list[tuple[int, int]]) -> None:
    """One `addr` filter per range (matching Y, allow Y), in core_filters; no range: one
    empty range, so nothing passes (zero filters would pass everything)."""
    d = f"{_sch(p)}/core_filters"
    rs = ranges or [(0, 0)]
    files.write(f"{d}/nr_filters", len(rs))
    for i, (a, b) in enumerate(rs):
        files.write(f"{d}/{i}/type", "addr")
        files.write(f"{d}/{i}/matching", "Y")
        files.write(f"{d}/{i}/allow", "Y")
        files.write(f"{d}/{i}/addr_start", a)
        files.write(f"{d}/{i}/addr_end", b)


def running(files: Files, p: Params) -> bool:
    return files.exists(f"{_kd(p)}/state") and files.read(f"{_kd(p)}/state").strip() == "on"


def check_ours(files: Files, p: Params) -> None:
    """A running kdamond must hold our split scheme for our pid; ValueError otherwise."""
    c = f"{_kd(p)}/contexts/0"
    pid = int(files.read(f"{c}/targets/0/pid_target").split()[0])
    action = files.read(f"{_sch(p)}/action").strip()
    if pid != p.pid or action not in SPLIT_ACTIONS:
        raise ValueError(f"kdamonds/{p.kdamond} runs scheme {p.scheme} '{action}' on pid {pid}, "
                         f"not a split scheme on pid {p.pid}")


def snapshots_for(p: Params, nr_ranges: int) -> int:
    """Scheme applications to allow this round. AUTO: two per range and one more. An `addr`
    filter whose start falls inside a region splits the region there and, as the kernel's
    damon_for_each_region_safe() walk does, the pass then skips the new piece; so a range
    needs a pass that cuts and a pass that applies, and k ranges inside one region need
    up to 2k passes (merges at aggregation can undo a cut: more rounds catch those)."""
    return 2 * max(nr_ranges, 1) + 1 if p.snapshots == AUTO else p.snapshots


def arm(files: Files, p: Params, on: bool, nr_ranges: int = 0) -> int:
    """max_nr_snapshots = nr_snapshots + this round's allowance, so the scheme applies
    exactly that many more times, then deactivates (0: no limit). Returns the value
    written (0 also when the level has no max_nr_snapshots)."""
    if not has_snapshot_limit(files, p):
        return 0
    st = f"{_sch(p)}/stats"
    n = snapshots_for(p, nr_ranges)
    limit = 0
    if n:
        done = 0
        if on:
            files.write(f"{_kd(p)}/state", "update_schemes_stats")
            done = int(files.read(f"{st}/nr_snapshots").split()[0])
        limit = done + n
    files.write(f"{st}/max_nr_snapshots", limit)
    return limit


def setup(files: Files, p: Params) -> Round:
    """Stage the scheme with no range yet and turn the kdamond on."""
    stage(files, p)
    install_filters(files, p, [])
    r = Round(max_nr_snapshots=arm(files, p, False), started=True)
    files.write(f"{_kd(p)}/state", "on")
    return r


def control_round(files: Files, p: Params, hist_or_thps) -> Round:
    """One round: decide from the histogram, resolve, install, commit (or stage and `on`
    when the kdamond is off).

    Args:
        hist_or_thps: (pfns, counts) subpage histogram, or a list of THP PFNs already chosen.
    """
    thps = choose(hist_or_thps, p.threshold)
    r = Round(candidates=len(thps))
    lo, hi = (p.start, p.end) if p.end > p.start else (0, ULONG_MAX)
    found = pfn_to_va(files, p.pid, thps, lo, hi)
    r.unresolved = max(len(thps) - len(found), 0)
    ranges = merge_ranges(found)
    if len(ranges) > p.max_filters:
        r.capped = len(ranges) - p.max_filters
        ranges = ranges[:p.max_filters]
    r.ranges = ranges
    on = running(files, p)
    if on:
        check_ours(files, p)
    else:
        stage(files, p)
    install_filters(files, p, ranges)
    r.max_nr_snapshots = arm(files, p, on, len(ranges))
    files.write(f"{_kd(p)}/state", "commit" if on else "on")
    r.started = not on
    return r
