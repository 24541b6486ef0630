"""The host view of `damond exec`: everything that makes the private namespaces look like
the emulated machine's host. `namespace.py` (the safety recipe, the PID namespace, the
binds over /sys, /proc and tracefs/debugfs), `standins.py` (same-pid stand-ins and per
process /proc binds, run inside the daemon), `env.py` (CMD's environment: the one place
it is built), `perf.py` + `bin/perf` (the perf that exec puts first on PATH). Twins and
the access tracer of real programs live beside them (twin*.py, tracing*.py, csrc/).
"""
