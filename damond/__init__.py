"""damond: the DAMON sysfs tree, served through FUSE over an emulated ARM64 memory system.

Package map (mirrors the kernel so a DAMON developer finds things by name):
  damond.mm     the emulated machine (mm/)
  damond.damon  the DAMON/DAMOS engine (mm/damon/core.c, vaddr.c, paddr.c, ...)
  damond.spe    the RFC's SPE feedback (mm/damon/spe.c) and the perf-script tools
  damond.fs     the FUSE front (mm/damon/sysfs*.c); fs_layout/ declares the tree
  damond.cli    one module per command
"""
__version__ = "0.1.0"
