"""The twin's reading of /proc/PID/maps and smaps: our own PROT_NONE pieces (one unit, or
several adjacent units the kernel merged into one VMA) are folded back into the mapping
they were cut from, a program's own PROT_NONE (a guard page, an arena reserve) is kept,
anonymous offsets (printed as 0) do not block merging, and VmFlags hg/nh become hints."""
from damond.host.twin import MapEntry, canonical, parse_maps, parse_vmflags

MAPS = """\
55d0c0000000-55d0c0001000 r--p 00000000 fe:00 123    /usr/bin/prog
7f0000000000-7f0000200000 rw-p 00000000 00:00 0
7f0000200000-7f0000600000 ---p 00000000 00:00 0
7f0000600000-7f0000800000 rw-p 00000000 00:00 0
7f0000800000-7f0000801000 ---p 00000000 00:00 0
7f0000801000-7f0000a00000 rw-p 00000000 00:00 0
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0    [stack]
"""


def test_our_units_fold_back_programs_guard_stays():
    e = parse_maps(MAPS)
    assert e[0].name == "/usr/bin/prog" and e[0].inode == 123 and e[1].anon and not e[1].shmem
    armed = {0x7F0000200000: (2 << 20, 3), 0x7F0000400000: (2 << 20, 3)}     # two units, merged by the kernel
    c = canonical(e, armed)
    assert [(x.start, x.end, x.perms) for x in c] == [
        (0x55D0C0000000, 0x55D0C0001000, "r--p"),
        (0x7F0000000000, 0x7F0000800000, "rw-p"),                             # units folded back
        (0x7F0000800000, 0x7F0000801000, "---p"),                             # the program's own guard
        (0x7F0000801000, 0x7F0000A00000, "rw-p"),
        (0x7FFC00000000, 0x7FFC00021000, "rw-p")]
    half = canonical(parse_maps(MAPS), {0x7F0000200000: (2 << 20, 3)})      # not fully ours: kept apart
    assert any(x.start == 0x7F0000200000 and x.perms == "---p" for x in half)


def test_vmflags_hints():
    smaps = ("7f0000000000-7f0000200000 rw-p 00000000 00:00 0\nSize: 2048 kB\nVmFlags: rd wr mr mw me ac hg\n"
             "7f0000200000-7f0000400000 rw-p 00000000 00:00 0\nVmFlags: rd wr mr mw me ac nh\n"
             "7f0000400000-7f0000600000 rw-p 00000000 00:00 0\nVmFlags: rd wr mr mw me ac\n")
    assert parse_vmflags(smaps) == {0x7F0000000000: "hugepage", 0x7F0000200000: "nohugepage"}


def test_shmem_kinds():
    e = parse_maps("7f0000000000-7f0000200000 rw-s 00000000 00:01 5    /dev/zero (deleted)\n"
                   "7f0000200000-7f0000400000 rw-s 00000000 00:01 6    /memfd:x (deleted)\n"
                   "7f0000400000-7f0000600000 rw-s 00000000 fe:00 7    /data/file\n")
    assert [x.shmem for x in e] == [True, True, False] and not any(x.anon for x in e)
    assert isinstance(e[0], MapEntry)
