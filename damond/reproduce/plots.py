"""PNG figures for `damond reproduce --plots DIR` (matplotlib, the optional `plots` extra):
T2 reported vs counted hot bytes per apply interval (THP=always, THP=never, after the
split), T5 per-THP subpage heatmaps and the accessed-fraction histogram (sampled and
counted), T4 regions and tried regions over time around the split."""
from __future__ import annotations

from pathlib import Path

from damond.reproduce.common import MiB, Result


class PlotsUnavailable(RuntimeError):
    pass


def _plt():
    try:
        import matplotlib
    except ImportError:
        raise PlotsUnavailable("--plots needs matplotlib: pip install 'damond[plots]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def write(results: list[Result], outdir: str) -> list[Path]:
    """Write every figure the results have data for; returns the files written."""
    plt = _plt()
    d = Path(outdir)
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for res in results:
        for key, data in res.plots.items():
            path = d / f"{key}.png" if key != "t5" else d / "t5_heatmap.png"
            globals()["_" + key](plt, data, path)
            out.append(path)
            if key == "t5":
                _t5_hist(plt, data, d / "t5_hot_fraction.png")
                out.append(d / "t5_hot_fraction.png")
    return out


def _t2(plt, data: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    modes = (("always", "THP=always"), ("never", "THP=never"), ("split", "after split\nto 16 KB"))
    for i, (key, label) in enumerate(modes):
        rep = [x / MiB for x in data[key]["reported"]]
        mean = sum(rep) / len(rep)
        tru = sum(data[key]["truth"]) / len(data[key]["truth"]) / MiB
        ax.bar(i - 0.2, mean, 0.4, color="tab:red", label="DAMON reports (mean, min..max)" if not i else None,
               yerr=[[mean - min(rep)], [max(rep) - mean]], capsize=4)
        ax.bar(i + 0.2, tru, 0.4, color="tab:blue", label="counted truth (pages touched)" if not i else None)
        ax.text(i - 0.2, mean * 1.15, f"{mean:.0f}", ha="center", fontsize=8)
        ax.text(i + 0.2, tru * 1.15, f"{tru:.0f}", ha="center", fontsize=8)
    ax.set_xticks(range(len(modes)))
    ax.set_xticklabels([m[1] for m in modes])
    ax.set_yscale("log")
    ax.set_ylabel("hot bytes per 100 ms (MiB, log)")
    ax.set_title(f"T2: {data['size'] >> 30} GB sparse workload, nr_accesses >= 1 vs pages really touched")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _t4(plt, series: list, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4))
    t = [x[0] for x in series]
    ax.step(t, [x[3] for x in series], where="post", lw=3, alpha=0.5, label="regions")
    ax.step(t, [x[2] for x in series], where="post", ls="--", label="tried (nr_accesses >= 1)")
    sp = [x[0] for x in series if x[1] == "split"]
    if sp:
        ax.axvspan(sp[0] - 100, sp[-1], color="grey", alpha=0.2, label="split scheme (min=0, order 2)")
    ax.set_xlabel("emulated time (ms)")
    ax.set_ylabel("regions")
    ax.set_title("T4: 256 MB of THPs, blind until split into 16 KB folios")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _t5(plt, data: dict, path: Path) -> None:
    import numpy as np
    heat = np.array(data["heat"]) if data["heat"] else np.zeros((1, 512))
    fig, ax = plt.subplots(figsize=(9, 4.5))
    im = ax.imshow(np.log10(heat + 1), aspect="auto", interpolation="nearest", cmap="magma")
    ax.set_yticks(range(len(data["heat_pfns"])))
    ax.set_yticklabels([f"{p:#x}" for p in data["heat_pfns"]], fontsize=5)
    ax.set_xlabel("subpage (4 KB) of the THP")
    ax.set_ylabel("THP PFN (most sampled, then spread over the rest)")
    ax.set_title("T5: SPE records per subpage, period 1024")
    fig.colorbar(im, ax=ax, label="log10(records + 1)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _t5_hist(plt, data: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = [i / 20 for i in range(21)]
    ax.hist([data["sampled"], data["truth"]], bins=bins, label=["SPE sampled", "counted truth"])
    ax.axvline(0.10, color="k", ls="--", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("fraction of the THP's 512 subpages accessed")
    ax.set_ylabel("THPs")
    ax.set_title("T5: per-THP accessed fraction (RFC: 95-97 % below 10 %)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
