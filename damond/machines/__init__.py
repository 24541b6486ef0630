"""Shipped machine profiles: `damond/machines/NAME.toml`, picked with `--machine NAME`.

`kunpeng920-rfc` (the default: the RFC's arm64 box and workloads) and `x86-vm` (a typical
x86_64 test VM with THP=madvise, as the kernel selftests assume). `load_machine(name)` is
the one loader; `Config.load(None)` uses it for the default. Owns the profile files only.
"""
from __future__ import annotations

from importlib import resources

from damond.config import Config
from damond.errors import ConfigError

DEFAULT = "kunpeng920-rfc"


def names() -> list[str]:
    """The shipped profile names, sorted."""
    return sorted(p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".toml"))


def load_machine(name: str) -> Config:
    """The Config of profile NAME; ConfigError (one line) for an unknown name."""
    if name not in names():
        raise ConfigError("--machine", f"no machine profile {name!r} (shipped: {', '.join(names())})")
    text = resources.files(__name__).joinpath(f"{name}.toml").read_text()
    return Config.from_text(text, f"<machine {name}>")
