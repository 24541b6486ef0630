"""Review against the kernel (kernel-sysfs.md, a live 6.18 tree): behaviours found to
differ by driving a real mount with echo/cat, each checked through the real mount."""
from __future__ import annotations

import errno
import threading

import pytest

from tests.helpers import read, write

THP = "kernel/mm/transparent_hugepage"


def _spawn(root, spec: str) -> int:
    write(root / "damond/spawn", spec + "\n")
    return int(read(root / "damond/spawn"))


def _vaddr_kdamond(damond, apply_interval_us: int):
    """One vaddr kdamond on a fresh access_memory_even process, one all-matching stat scheme."""
    pid = _spawn(damond.root, "access_memory_even nr_regions=2 sz_region=4M")
    k = damond.admin / "kdamonds"
    write(k / "nr_kdamonds", "1")
    write(k / "0/contexts/nr_contexts", "1")
    c = k / "0/contexts/0"
    write(c / "targets/nr_targets", "1")
    write(c / "targets/0/pid_target", str(pid))
    write(c / "schemes/nr_schemes", "1")
    s = c / "schemes/0"
    write(s / "access_pattern/sz/max", str(2**64 - 1))
    write(s / "access_pattern/nr_accesses/max", str(2**32 - 1))
    write(s / "access_pattern/age/max", str(2**32 - 1))
    write(s / "apply_interval_us", str(apply_interval_us))
    return k / "0", c, s


def test_other_files_answer_while_a_tried_regions_walk_waits(damond):
    """state_show/pid_show/nr_* trylock damon_sysfs_lock -> EBUSY while a walk holds it;
    plain attribute files take no lock and answer at once (kernel-sysfs.md 2.6)."""
    kd, c, s = _vaddr_kdamond(damond, apply_interval_us=3_000_000)
    write(kd / "state", "on\n")
    done = threading.Event()
    errs: list = []

    def walk():
        try:
            write(kd / "state", "update_schemes_tried_regions\n")
        except OSError as e:
            errs.append(e)
        done.set()

    t = threading.Thread(target=walk)
    t.start()
    try:
        # the walk holds the lock until the scheme's next apply (3 s after `on`)
        for _ in range(200):
            try:
                read(kd / "state")
            except OSError as e:
                assert e.errno == errno.EBUSY
                break
        else:
            pytest.fail("state never reported EBUSY while the walk was pending")
        assert read(c / "monitoring_attrs/intervals/sample_us") == "5000\n"
        with pytest.raises(OSError) as e:
            read(kd / "pid")
        assert e.value.errno == errno.EBUSY
        with pytest.raises(OSError) as e:
            write(s / "quotas/goals/nr_goals", "1\n")
        assert e.value.errno == errno.EBUSY
        assert not done.is_set()
    finally:
        t.join(30)
    assert not errs and read(kd / "state") == "on\n"
    assert int(read(s / "tried_regions/total_bytes")) > 0
    write(kd / "state", "off\n")


def test_thp_per_size_shmem_enabled_files(damond):
    """6.18 has hugepages-<size>kB/shmem_enabled (0644, always inherit within_size advise
    never; PMD size inherit, the others never), as on the live tree."""
    t = damond.root / THP
    assert read(t / "hugepages-2048kB/shmem_enabled") == "always [inherit] within_size advise never\n"
    f = t / "hugepages-64kB/shmem_enabled"
    assert oct(f.stat().st_mode & 0o777) == "0o644"
    assert read(f) == "always inherit within_size advise [never]\n"
    write(f, "within_size\n")
    assert read(f) == "always inherit [within_size] advise never\n"
    with pytest.raises(OSError) as e:
        write(f, "deny\n")
    assert e.value.errno == errno.EINVAL


@pytest.mark.parametrize("name, value, err", [
    ("khugepaged/pages_to_scan", "0x10", errno.EINVAL),        # kstrtouint(buf, 10): no 0x
    ("khugepaged/pages_to_scan", "99999999999", errno.EINVAL),  # any parse error is EINVAL
    ("khugepaged/pages_to_scan", "0", errno.EINVAL),
    ("khugepaged/max_ptes_none", "512", errno.EINVAL),
    ("khugepaged/scan_sleep_millisecs", "99999999999", errno.EINVAL),
    ("use_zero_page", "0x1", errno.EINVAL),                     # kstrtoul(buf, 10)
    ("use_zero_page", "99999999999999999999", errno.ERANGE),    # kstrtoul's own errno
    ("khugepaged/defrag", "2", errno.EINVAL),
])
def test_thp_numeric_stores_are_base_10(damond, name, value, err):
    f = damond.root / THP / name
    before = read(f)
    with pytest.raises(OSError) as e:
        write(f, value + "\n")
    assert e.value.errno == err
    assert read(f) == before


def test_thp_decimal_with_leading_zero_is_decimal(damond):
    t = damond.root / THP
    write(t / "khugepaged/max_ptes_none", "010\n")
    assert read(t / "khugepaged/max_ptes_none") == "10\n"
    write(t / "khugepaged/pages_to_scan", "+4096\n")
    assert read(t / "khugepaged/pages_to_scan") == "4096\n"


def test_proc_maps_unnamed_vma_keeps_the_trailing_space(damond):
    """show_vma_header_prefix prints "... %lu " (a space after the inode); an unnamed
    mapping adds nothing after it, so the line ends in "0 " (fs/proc/task_mmu.c)."""
    pid = _spawn(damond.root, "mmap size=4M populate=true")
    maps = read(damond.root / f"proc/{pid}/maps").splitlines()
    anon = [ln for ln in maps if ln.split()[4:5] == ["0"] and len(ln.split()) == 5]
    assert anon and all(ln.endswith(" 00:00 0 ") for ln in anon)
    smaps = read(damond.root / f"proc/{pid}/smaps").splitlines()
    assert set(anon) <= set(smaps)
    named = [ln for ln in maps if len(ln.split()) == 6]
    assert named and all(not ln.endswith(" ") and len(ln) > 73 for ln in named)
