"""Optional compiled parts (metadata lives in pyproject.toml).

`damond.spe._feedparse` is the compiled spe_feed parser/aggregator and spe-hist scanner,
built from damond/spe/csrc/*.c. It is optional: without a C compiler and the Python
headers (Debian: gcc, python3-dev) the build skips it and damond.spe.feed / hist fall
back to their numpy/regex code (same results, slower).
"""
from setuptools import Extension, setup

CSRC = "damond/spe/csrc"

setup(ext_modules=[Extension("damond.spe._feedparse",
                             [f"{CSRC}/{n}.c" for n in ("feedparse", "aggregator", "aggregator_ops", "perfscan")],
                             depends=[f"{CSRC}/feedparse.h", f"{CSRC}/aggregator.h"], extra_compile_args=["-O2"], optional=True)])
