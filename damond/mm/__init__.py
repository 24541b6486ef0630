"""The emulated ARM64 memory system (issue 3): physical memory, page tables with one Access
Flag per leaf, TLB models, mTHP folios, THP policy, khugepaged and workload processes.
The public entry point is `damond.mm.machine.Machine`."""
