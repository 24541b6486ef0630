"""The RFC's SPE feedback (`mm/damon/spe.c`) and its userspace tools.

  tree.py         the per-folio PFN tree (rb-tree of THP histograms), prune, spe_stats text
  heatmap.py      the split handler's heatmap / hot fraction, with the PTE-walk fallback
  feed.py         spe_feed line parsing (compiled `_feedparse` when built, numpy/regex fallback)
  sampler.py      an emulated arm_spe PMU over the running machine
  perf_script.py  `perf script` text for SPE records, and its parser (spe_hist input)
  hist.py         per-THP 512-bin histograms and the spe_hist outputs
"""
