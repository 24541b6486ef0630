"""The daemon's configuration: one TOML file describing the emulated machine, its
workloads, the SPE tree and the daemon; an embedded default when none is given.

This module only loads the file and locates keys for error messages. Each section is
validated by its owner (`damond.mm` for [machine], [thp], [khugepaged], [[workload]];
`damond.spe` for [spe]; `damond.system` for [daemon]), which raises `ConfigError` via
`Config.error`, so every refusal is one line naming the file, the line and the problem.
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from damond.errors import ConfigError

# the top-level keys and tables a config may hold; each table's keys are checked by its owner
TOP_LEVEL = ("seed", "machine", "thp", "khugepaged", "workload", "spe", "damon", "daemon")
SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class Config:
    """A parsed config: `data` is the TOML dict, `path` and `text` serve error messages."""

    def __init__(self, data: dict, path: str, text: str):
        self.data, self.path, self.text = data, path, text

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Config":
        if path is None:
            return cls.load_machine(None)
        name = str(path)
        try:
            raw = Path(path).read_bytes()
        except OSError as e:
            raise ConfigError(name, f"cannot read: {e.strerror}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw.count(b"\n", 0, e.start) + 1
            raise ConfigError(name, f"not UTF-8 text (byte {raw[e.start]:#04x}); TOML files are UTF-8",
                              line) from None
        return cls.from_text(text, name)

    @classmethod
    def load_machine(cls, name: str | None) -> "Config":
        """A shipped machine profile (damond/machines/NAME.toml); None: the default one."""
        from damond import machines

        return machines.load_machine(name or machines.DEFAULT)

    @classmethod
    def from_text(cls, text: str, name: str = "<config>") -> "Config":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            m = re.search(r"line (\d+)", str(e))
            raise ConfigError(name, f"not valid TOML: {str(e).split(' (at')[0]}", int(m.group(1)) if m else None) from None
        config = cls(data, name, text)
        for k in data:
            if k not in TOP_LEVEL:
                what = "table" if isinstance(data[k], (dict, list)) else "key"
                raise config.error(k, f"unknown top-level {what} '{k}' (known: {', '.join(TOP_LEVEL)})",
                                   config.line_of_top(k))
        return config

    @property
    def seed(self) -> int:
        seed = self.data.get("seed", 1)
        if not isinstance(seed, int) or seed < 0:
            raise self.error("seed", "seed must be a non-negative integer")
        return seed

    def section(self, name: str) -> dict[str, Any]:
        v = self.data.get(name, {})
        if not isinstance(v, dict):
            raise self.error(name, f"[{name}] must be a table")
        return v

    def line_of(self, key: str) -> int | None:
        """Best-effort line number of a dotted key (`machine.tlb.l2_entries`) or a table name."""
        parts = key.split(".")
        lines = self.text.splitlines()
        # try the last component as `name =` after the table header of the rest
        table = ".".join(parts[:-1])
        in_table = table == ""
        for no, line in enumerate(lines, 1):
            s = line.strip()
            if s.startswith("["):
                hdr = s.strip("[]").strip()
                in_table = hdr == table or hdr == key
                if hdr == key:
                    return no
                continue
            if in_table and re.match(rf"{re.escape(parts[-1])}\s*=", s):
                return no
        for no, line in enumerate(lines, 1):
            if re.match(rf"\s*{re.escape(parts[-1])}\s*=", line):
                return no
        return None

    def line_of_top(self, key: str) -> int | None:
        """Line of a top-level key or the header of a top-level table ([key], [[key]], [key.x])."""
        table = None
        for no, line in enumerate(self.text.splitlines(), 1):
            s = line.strip()
            if s.startswith("["):
                table = s.strip("[]").strip()
                if table == key or table.startswith(key + "."):
                    return no
            elif table is None and re.match(rf"{re.escape(key)}\s*=", s):
                return no
        return None

    def error(self, key: str, problem: str, line: int | None = None) -> ConfigError:
        return ConfigError(self.path, problem, line if line is not None else self.line_of(key))


def parse_size(v: Any, what: str = "size") -> int:
    """'8G', '512M', '16K', 4096 -> bytes. Raises ValueError with a readable message."""
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    if isinstance(v, str):
        m = SIZE_RE.match(v)
        if m:
            unit = (m.group(2) or "").upper().rstrip("B").rstrip("I")
            return int(m.group(1)) * _UNITS[unit]
    raise ValueError(f"{what} {v!r} is not a size (examples: 4096, '64K', '512M', '8G')")


def validate(config: Config) -> None:
    """Check every section with its owner, allocating nothing of the machine: what a
    daemon would refuse at start is refused here, as one ConfigError line."""
    from types import SimpleNamespace

    from damond.clock import VirtualClock
    from damond.damon.core import engine_settings
    from damond.mm import mconfig
    from damond.mm.thp import ThpSettings
    from damond.spe.tree import PfnTree
    from damond.system import DaemonSettings

    _ = config.seed
    mconfig.parse(config)
    mconfig.configure_thp(config, ThpSettings())
    PfnTree.from_config(config, VirtualClock())     # [spe]: at most 1M entries, a few MB
    engine_settings(SimpleNamespace(config=config))
    DaemonSettings.from_config(config)
