"""Parser for masim configuration files (sjp38/masim), so existing configs run unchanged.

Format (emulator-facts.md §8): paragraphs separated by blank lines, `#` starts a comment.
The first paragraph lists regions, `name, size_bytes[, init_data_file|none]`. Every later
paragraph is a phase: its name, its duration in ms, then pattern lines
`region, random(1)/sequential(0), stride_bytes, probability_weight[, ro|wo|rw]`.
Errors raise ConfigError naming the masim file and line.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from damond.errors import ConfigError


@dataclass(frozen=True)
class MasimRegion:
    name: str
    size: int


@dataclass(frozen=True)
class MasimPattern:
    region: str
    random: bool
    stride: int
    weight: int
    rw: str


@dataclass(frozen=True)
class MasimPhase:
    name: str
    time_ms: int
    patterns: tuple[MasimPattern, ...]


@dataclass(frozen=True)
class MasimConfig:
    regions: tuple[MasimRegion, ...]
    phases: tuple[MasimPhase, ...]


def _int(tok: str, what: str, path: str, line: int, lo: int = 0) -> int:
    try:
        v = int(tok.strip(), 0)
    except ValueError:
        raise ConfigError(path, f"{what} {tok.strip()!r} is not an integer", line) from None
    if v < lo:
        raise ConfigError(path, f"{what} must be >= {lo}", line)
    return v


def parse(text: str, path: str) -> MasimConfig:
    """Parse masim config text; `path` names the file in errors."""
    paras: list[list[tuple[int, str]]] = [[]]
    for no, raw in enumerate(text.splitlines(), 1):
        s = raw.split("#", 1)[0].strip()
        if not s:
            if not raw.strip() and paras[-1]:
                paras.append([])
            continue
        paras[-1].append((no, s))
    paras = [p for p in paras if p]
    if not paras:
        raise ConfigError(path, "no regions paragraph", None)
    regions: dict[str, MasimRegion] = {}
    for no, s in paras[0]:
        f = [x.strip() for x in s.split(",")]
        if len(f) not in (2, 3) or not f[0]:
            raise ConfigError(path, "region line must be 'name, size_bytes[, init_data_file]'", no)
        if f[0] in regions:
            raise ConfigError(path, f"region {f[0]!r} defined twice", no)
        regions[f[0]] = MasimRegion(f[0], _int(f[1], "region size", path, no, 1))
    if len(paras) < 2:
        raise ConfigError(path, "no phase paragraph after the regions", paras[0][-1][0])
    phases = []
    for para in paras[1:]:
        if len(para) < 3:
            raise ConfigError(path, "a phase needs a name, a duration in ms and at least one pattern", para[0][0])
        name = para[0][1]
        time_ms = _int(para[1][1], "phase duration (ms)", path, para[1][0], 1)
        pats = []
        for no, s in para[2:]:
            f = [x.strip() for x in s.split(",")]
            if len(f) not in (4, 5):
                raise ConfigError(path, "pattern line must be 'region, random(1)/sequential(0), stride, "
                                        "probability[, ro|wo|rw]'", no)
            if f[0] not in regions:
                raise ConfigError(path, f"unknown region {f[0]!r}", no)
            rnd = _int(f[1], "randomness", path, no)
            if rnd not in (0, 1):
                raise ConfigError(path, "randomness must be 0 (sequential) or 1 (random)", no)
            rw = f[4] if len(f) == 5 else "wo"
            if rw not in ("ro", "wo", "rw"):
                raise ConfigError(path, f"access mode {rw!r} is not ro, wo or rw", no)
            pats.append(MasimPattern(f[0], bool(rnd), _int(f[2], "stride", path, no, 1),
                                     _int(f[3], "probability", path, no), rw))
        if sum(p.weight for p in pats) <= 0:
            raise ConfigError(path, "phase has zero total probability", para[2][0])
        phases.append(MasimPhase(name, time_ms, tuple(pats)))
    return MasimConfig(tuple(regions.values()), tuple(phases))


def load(path: str | Path, base: Path | None = None) -> MasimConfig:
    p = Path(path)
    if not p.is_absolute() and base is not None:
        p = base / p
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(str(p), f"cannot read masim config: {e.strerror}") from None
    return parse(text, str(p))
