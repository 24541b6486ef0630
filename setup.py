"""Optional compiled parts (metadata lives in pyproject.toml).

`damond.spe._feedparse` is the compiled spe_feed parser/aggregator and spe-hist scanner,
built from damond/spe/csrc/*.c. It is optional: without a C compiler and the Python
headers (Debian: gcc, python3-dev) the build skips it and damond.spe.feed / hist fall
back to their numpy/regex code (same results, slower).
"""
from setuptools import Extension, setup

CSRC = "damond/spe/csrc"

setup(ext_modules=[Extension("damond.spe._feedparse",
                             [f"{CSRC}/feedparse.c", f"{CSRC}/aggregator.c", f"{CSRC}/perfscan.c"],
                             depends=[f"{CSRC}/feedparse.h"], extra_compile_args=["-O2"], optional=True)])
