"""The FUSE front: the DAMON admin tree, debugfs SPE files, THP controls, /proc texts and
damond control files, served from `fs_layout/` over one `damond.system.System`."""
