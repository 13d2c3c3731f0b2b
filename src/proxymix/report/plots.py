"""Plots (matplotlib, Agg canvas, no global pyplot state), saved atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from proxymix.io import atomic_write


def _save(fig: Figure, path: str | Path) -> Path:
    FigureCanvasAgg(fig)
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"), mode="wb")


def plot_r_heatmap(R: np.ndarray, tasks: list[str], rows: list[str], path, title: str) -> Path:
    fig = Figure(figsize=(1.0 + 0.8 * len(tasks), 0.8 + 0.45 * len(rows)))
    ax = fig.add_subplot()
    im = ax.imshow(R, vmin=0, vmax=100, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(tasks)), tasks, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), [f"after {r}" for r in rows])
    for (i, j), v in np.ndenumerate(R):
        ax.text(j, i, f"{v:.0f}", ha="center", va="center", color="w" if v < 60 else "k", fontsize=8)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="score (points)")
    return _save(fig, path)


def plot_mixture(trace: list[dict], columns: list[str], path, title: str) -> Path:
    """Mixture weights over optimizer steps as a stacked area, with phase boundaries."""
    steps = np.array([r["step"] for r in trace])
    weights = np.array([[r[f"w:{c}"] for r in trace] for c in columns])
    fig = Figure(figsize=(8, 3.5))
    ax = fig.add_subplot()
    ax.stackplot(steps, weights, labels=columns, step="post")
    for r, prev in zip(trace[1:], trace[:-1]):
        if r["phase"] != prev["phase"]:
            ax.axvline(r["step"], color="k", lw=0.6, ls="--")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("batch share")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7)
    return _save(fig, path)
