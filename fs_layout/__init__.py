"""The one declarative description of every directory and file damond serves.

Owns names, modes, defaults, value kinds, ranges and feature levels of the DAMON admin
tree (`mm/damon/sysfs.c`, `sysfs-schemes.c` attribute and ktype declarations), the THP
controls (`mm/huge_memory.c`, `mm/khugepaged.c` sysfs attributes) and nothing else:
`damond/fs/tree.py` builds nodes from these specs; no other module writes a file name,
mode or default. Kinds: u64 (kstrtoul, `%lu`), u32 (kstrtouint, `%u`), int (kstrtoint,
`%d`), bool (kstrtobool, `Y`/`N`), keyword (sysfs_streq against an enum's words),
keyword_list (read-only, one word per line), string (bytes verbatim, cut at NUL).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Feature levels in order; a node declared `since=X` exists at every level >= X.
# "6.18" is the base; the RFC's additions are present at every level (all end "+rfc").
# "next" is NOT a kernel release: damond's "beyond" level for features only posted as RFCs
# and planned upstream (the perf-event access check, timing-and-designs-facts.md 2.5).
LEVELS = ("6.18", "6.19", "7.0", "7.1", "next")
DEFAULT_LEVEL = "6.18+rfc"
NEVER = "never"   # mm.git-only items that no supported level carries


def level_index(level: str) -> int:
    """Index of a feature level ("7.0+rfc" or "7.0") in LEVELS; ValueError if unknown."""
    base = level.removesuffix("+rfc")
    return LEVELS.index(base)


def present(since: str, level: str) -> bool:
    """Whether an item declared `since` exists at `level`."""
    if since == NEVER:
        return False
    if since == "rfc":
        return level.endswith("+rfc")
    return level_index(since) <= level_index(level)


@dataclass(frozen=True)
class Attr:
    """One attribute file.

    role names the few files whose read/write is behaviour, not a stored value
    (`state`, `pid`, `avail_operations`, `refresh_ms`); `errno` maps every parse error
    to that errno (the kernel's `pid_target`, quota stores return EINVAL always).
    `lo`/`hi`/`invalid` are store-time range checks (EINVAL). `choices` limits a keyword file to
    some of the enum's words (filter `type` per directory).
    """
    name: str
    kind: str
    default: Any = 0
    mode: int = 0o600
    keywords: Any = None          # an enum class whose values are the kernel words
    choices: tuple = ()
    lo: int | None = None
    hi: int | None = None
    invalid: tuple = ()           # values inside lo..hi still refused (target_order 1)
    errno: int | None = None
    role: str = ""
    since: str = "6.18"


@dataclass(frozen=True)
class Dir:
    """A fixed directory. `role` tags directories the commit code looks up."""
    name: str
    children: tuple = ()
    role: str = ""
    since: str = "6.18"


@dataclass(frozen=True)
class Indexed:
    """A directory holding an `nr_*` file and numbered children `0..N-1` built from
    `item` (its name is ignored). Writing `nr` destroys every child and creates N
    fresh ones with defaults. `nr=None`: children are created only by the daemon
    (tried_regions). `max_nr`: larger values are EINVAL (nr_contexts: 1).
    `busy_if_running`: EBUSY while any kdamond runs (nr_kdamonds)."""
    name: str
    nr: str | None
    item: Dir
    extra: tuple = ()
    max_nr: int | None = None
    busy_if_running: bool = False
    role: str = ""
    since: str = "6.18"


def ul_range(name: str, since: str = "6.18", role: str = "") -> Dir:
    """The kernel's damon_sysfs_ul_range: a dir with `min` and `max` (kstrtoul)."""
    return Dir(name, (Attr("min", "u64"), Attr("max", "u64")), role=role, since=since)


@dataclass
class Keyword:
    """Since-table of individual keywords (e.g. a goal metric added in 6.19)."""
    since: dict = field(default_factory=dict)
