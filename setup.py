"""Optional compiled parts (metadata lives in pyproject.toml).

`damond.spe._feedparse` is the compiled spe_feed parser/aggregator and spe-hist scanner,
built from damond/spe/csrc/*.c. It is optional: without a C compiler and the Python
headers (Debian: gcc, python3-dev) the build skips it and damond.spe.feed / hist fall
back to their numpy/regex code (same results, slower).

`damond.mm._pagefast` does the per-sample byte operations of damond/mm/pagebytes.py (the
access checks' gathers and updates, built from damond/mm/csrc/pagefast.c), one C loop
instead of several numpy calls on arrays of 10..1000 entries. Optional as well:
pagebytes.py keeps the numpy code (same results) for when it is missing.

`damond.host._trace_preload` is not a Python module: it is the LD_PRELOAD access tracer
for real programs (damond/host/csrc/trace_preload.c, see damond/host/tracing.py), built
as a shared object so `pip install` puts it next to the package. Optional as well:
without it real pids are refused (EINVAL) as before.

`damond.damon._rand` draws vaddr's sampling addresses of a whole sample batch with numpy's
own bounded-integer rules from the same bit generator (same numbers, several times faster
than Generator.integers with per-region bounds). Optional: without it, and whenever its
numbers would differ from numpy's (checked at import), vaddr calls numpy.
"""
from setuptools import Extension, setup

CSRC = "damond/spe/csrc"
HOST = "damond/host/csrc"

setup(ext_modules=[Extension("damond.spe._feedparse",
                             [f"{CSRC}/{n}.c" for n in ("feedparse", "aggregator", "aggregator_ops", "perfscan")],
                             depends=[f"{CSRC}/feedparse.h", f"{CSRC}/aggregator.h"], extra_compile_args=["-O2"], optional=True),
                   Extension("damond.mm._pagefast", ["damond/mm/csrc/pagefast.c"], extra_compile_args=["-O2"],
                             optional=True),
                   Extension("damond.host._trace_preload", [f"{HOST}/trace_preload.c"],
                             extra_compile_args=["-O2", "-Wall", "-pthread", "-fvisibility=default"],
                             extra_link_args=["-pthread", "-ldl"], optional=True),
                   Extension("damond.damon._rand", ["damond/damon/csrc/rand.c"], extra_compile_args=["-O2"], optional=True)])
