"""Optional compiled parts (metadata lives in pyproject.toml).

`damond.spe._feedparse` is the single-pass spe_feed parser. It is optional: without a C
compiler and the Python headers (Debian: gcc, python3-dev) the build skips it and
damond.spe.feed falls back to its numpy/regex parser (same results, slower).
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("damond.spe._feedparse", ["damond/spe/_feedparse.c"],
                             extra_compile_args=["-O2"], optional=True)])
