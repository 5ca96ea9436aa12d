"""Plots every stage saves: PNG files for people, with the tidy CSV behind each for `dvc plots`.

Each function takes a tidy table (one row per point), draws one figure, writes `<name>.png` and
`<name>.csv` into the given folder, and returns the figure so a notebook shows it inline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: the pipeline runs without a display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from r1repro.io import atomic_write_text  # noqa: E402


def _save(fig, table: pd.DataFrame, folder: Path, name: str):
    folder.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(folder / f"{name}.png", dpi=110, metadata={"Software": None})
    atomic_write_text(folder / f"{name}.csv", table.to_csv(index=False))
    return fig


def _label_and_save(fig, ax, table: pd.DataFrame, folder: Path, name: str, title: str, xlabel: str,
                    ylabel: str, legend: bool):
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if legend:
        ax.legend(fontsize=8)
    return _save(fig, table, folder, name)


def grouped_bars(table: pd.DataFrame, x: str, y: str, hue: str | None, folder: Path, name: str,
                 title: str, ylabel: str, log: bool = False, errors: tuple[str, str] | None = None):
    """Bars of `y` per `x`, one colour per `hue`; `errors` names (low, high) columns for intervals.

    Args:
        table: tidy data, one row per bar.
        x, y, hue: column names.
        folder, name: where `<name>.png` and `<name>.csv` go.
        title, ylabel: labels.
        log: log-scale y axis (for counts that span orders of magnitude).
        errors: optional (low, high) columns drawn as error bars.
    Returns:
        The matplotlib figure.
    """
    groups = list(dict.fromkeys(table[hue])) if hue else [None]
    xs = list(dict.fromkeys(table[x]))
    width = 0.8 / len(groups)
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(xs) * max(1, len(groups)) * 0.6), 3.6))
    for i, group in enumerate(groups):
        part = table if group is None else table[table[hue] == group]
        part = part.set_index(x).reindex(xs)
        positions = [j + (i - (len(groups) - 1) / 2) * width for j in range(len(xs))]
        yerr = None
        if errors:
            yerr = [(part[y] - part[errors[0]]).clip(lower=0), (part[errors[1]] - part[y]).clip(lower=0)]
        ax.bar(positions, part[y], width=width, label=str(group) if group is not None else None,
               yerr=yerr, capsize=3)
    ax.set_xticks(range(len(xs)), [str(v) for v in xs], rotation=20 if len(xs) > 4 else 0)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if log:
        ax.set_yscale("symlog", linthresh=1)
    if hue:
        ax.legend(fontsize=8)
    return _save(fig, table, folder, name)


def lines(table: pd.DataFrame, x: str, y: str, hue: str | None, folder: Path, name: str, title: str,
          ylabel: str, xlabel: str | None = None, band: tuple[str, str] | None = None):
    """Lines of `y` over `x`, one per `hue`, with an optional (low, high) band.

    Args:
        table: tidy data, one row per point.
        x, y, hue: column names.
        folder, name: where `<name>.png` and `<name>.csv` go.
        title, ylabel, xlabel: labels.
        band: optional (low, high) columns shaded around each line.
    Returns:
        The matplotlib figure.
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for group, part in (table.groupby(hue, sort=False) if hue else [(None, table)]):
        part = part.sort_values(x)
        ax.plot(part[x], part[y], marker="o", markersize=3, label=str(group) if hue else None)
        if band:
            ax.fill_between(part[x], part[band[0]], part[band[1]], alpha=0.2)
    return _label_and_save(fig, ax, table, folder, name, title, xlabel or x, ylabel, legend=bool(hue))


def panels(tables: Sequence[tuple[str, pd.DataFrame, str]], x: str, hue: str, folder: Path, name: str,
           title: str):
    """Side-by-side line panels sharing `x` and `hue` (e.g. the Dr. GRPO paper's Figure 6).

    Args:
        tables: (panel title, tidy table, y column) per panel.
        x, hue: shared column names.
        folder, name: where `<name>.png` and `<name>.csv` go (the CSV stacks the panels).
        title: the figure's title.
    Returns:
        The matplotlib figure.
    """
    fig, axes = plt.subplots(1, len(tables), figsize=(4 * len(tables), 3.4), squeeze=False)
    stacked = []
    for ax, (panel_title, table, y) in zip(axes[0], tables):
        for group, part in table.groupby(hue, sort=False):
            part = part.sort_values(x)
            ax.plot(part[x], part[y], label=str(group))
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel(x)
        stacked.append(table.assign(panel=panel_title).rename(columns={y: "value"}))
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, pd.concat(stacked, ignore_index=True), folder, name)


def scatter(table: pd.DataFrame, x: str, y: str, hue: str | None, folder: Path, name: str, title: str,
            ylabel: str, xlabel: str | None = None):
    """Points of `y` against `x`, one colour per `hue`, each with its least-squares line.

    Args:
        table: tidy data, one row per point.
        x, y, hue: column names.
        folder, name: where `<name>.png` and `<name>.csv` go.
        title, ylabel, xlabel: labels.
    Returns:
        The matplotlib figure.
    """
    import numpy as np

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for group, part in (table.groupby(hue, sort=False) if hue else [(None, table)]):
        points = ax.scatter(part[x], part[y], s=12, alpha=0.6, label=str(group) if hue else None)
        if part[x].nunique() > 1:
            slope, intercept = np.polyfit(part[x], part[y], 1)
            ends = np.array([part[x].min(), part[x].max()])
            ax.plot(ends, slope * ends + intercept, color=points.get_facecolor()[0], alpha=0.9)
    return _label_and_save(fig, ax, table, folder, name, title, xlabel or x, ylabel, legend=bool(hue))
