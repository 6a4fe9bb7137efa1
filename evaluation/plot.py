"""PNG of the latency distributions (matplotlib's Agg canvas; no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from evaluation.metrics import ItemScore


def plot_latencies(scores: Sequence[ItemScore], path: str | Path, *, title: str = "") -> Path:
    """Histograms of first_partial, final and eou latencies with their p50 and p95."""
    series = {
        "first partial (per word)": [x for s in scores for x in s.first_partial],
        "final (per word)": [x for s in scores for x in s.final],
        "end of utterance (per item)": [s.eou for s in scores if s.eou is not None],
    }
    fig = Figure(figsize=(12, 3.8), layout="constrained")
    for ax, (name, values) in zip(fig.subplots(1, 3), series.items(), strict=True):
        ax.set_title(name)
        ax.set_xlabel("latency (s)")
        if not values:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            continue
        data = np.asarray(values, dtype=np.float64)
        ax.hist(data, bins=min(40, max(5, data.size // 3)), color="#4c72b0")
        for q, style in ((50, "-"), (95, "--")):
            value = float(np.percentile(data, q))
            ax.axvline(value, color="#c44e52", linestyle=style, label=f"p{q} = {value:.2f} s")
        ax.legend()
    if title:
        fig.suptitle(title)
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path
