"""The five workloads of `damond reproduce designs`, at the documented reduced sizes.

Owns, per JSON name, the machine and [[workload]] text one run gets (the seed goes into
the config's top-level `seed` and, for guest-db, into the workload's own `seed`) and the
sizes the report prints. Sizes are reduced so that 6 designs x 5 workloads x 3 seeds and
the sweeps run in minutes on two cores; sparse_8g keeps the RFC's 8 GiB (at 2 GiB its 1024
PMDs would fit the 2048-entry L2 TLB and it would no longer be the RFC's case).

- sparse_8g: the RFC's sparse_8g (one 4 KiB page per 2 MiB of 8 GiB, swept).
- hot_workload: the RFC's hot_workload, 40 THPs with 25 % of their subpages hot.
- guest-db: a QEMU guest's 4 GiB RAM on THP tmpfs (huge=always, prealloc) running a
  database buffer cache (damond.mm.workload's guest-db kind) at 3e4 page touches/s, a rate
  at which the zipfian tail leaves most cache THPs 1-10 % touched per 10 s.
- masim-phases: a masim config of three 128 MiB regions and three 5 s phases, repeated,
  that move the hot set: each phase sweeps one region (99.5 % of the touches) and touches
  the next one at random (0.5 %), at a fixed 1e5 page touches/s; it has no populate, so the
  design is set up after one 15 s cycle has faulted its memory in.
- uniform: 512 MiB swept whole at 2e6 page touches/s (every THP dense: nothing should be
  split).

The RFC's two programs run at the rate the timing model gives them (1e7 and more page
touches per second); the other three run at fixed rates that keep a 30 s run cheap, 100 to
1000 times below a real database or sweep. Their SPE period is lowered with the rate (4,
16 and 256 instead of the RFC's 1024), so that the SPE records per THP per second are of
the order the RFC's period gives at the real rates; at period 1024 guest-db would give a
few records per THP per minute and every design fed by SPE would see no data at all.
"""
from __future__ import annotations

from dataclasses import dataclass

MASIM_PHASES = """# damond reproduce designs: masim-like phases (sjp38/masim format)
a, 134217728
b, 134217728
c, 134217728

phase_a_hot
5000
a, 0, 4096, 199
b, 1, 4096, 1

phase_b_hot
5000
b, 0, 4096, 199
c, 1, 4096, 1

phase_c_hot
5000
c, 0, 4096, 199
a, 1, 4096, 1
"""


@dataclass(frozen=True)
class Workload:
    name: str
    memory: str              # [machine] memory
    text: str                # [[workload]] table(s); {seed} is the run's seed
    size: str                # what the report prints
    populate_limit_s: float = 60.0
    warmup_s: float = 0.1    # virtual time after populate before the design is set up
    spe_period: int = 1024   # the runner's arm_spe period (see the module text)
    masim: bool = False      # needs MASIM_PHASES written next to the config

    def config(self, seed: int, masim_path: str = "") -> str:
        return self.text.replace("{seed}", str(seed)).replace("{masim}", masim_path)


WORKLOADS: dict[str, Workload] = {w.name: w for w in (
    Workload("sparse_8g", "10G", '[[workload]]\nkind = "sparse-hotspot"\nsize = "8G"\n', "8 GiB"),
    Workload("hot_workload", "512M", '[[workload]]\nkind = "thp-hot"\nnr_thps = 40\nhot_pct = 25\nduration_s = 0\n',
             "40 THPs (80 MiB), 25 % hot"),
    Workload("guest-db", "6G", '[[workload]]\nkind = "guest-db"\nsize = "4G"\nshmem = true\nhuge = "always"\n'
             'rate = 3e4\nseed = {seed}\n', "4 GiB guest RAM on THP tmpfs, 2.8 GiB buffer cache", spe_period=4),
    Workload("masim-phases", "2G", '[[workload]]\nkind = "masim"\nfile = "{masim}"\nrepeat = true\n'
             'rate = 1e5\n', "3 x 128 MiB, 3 phases of 5 s, 1e5 touches/s", masim=True,
             warmup_s=15.0, spe_period=16),
    Workload("uniform", "1G", '[[workload]]\nkind = "uniform"\nsize = "512M"\nrate = 2e6\n',
             "512 MiB swept at 2e6 touches/s", spe_period=256),
)}
