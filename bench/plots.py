"""PNG figures of the benchmarks, written next to their tables (``--plot DIR``,
docs/plots by default; ``--plot ''`` writes none).

matplotlib (PyPI) draws them with its Agg backend, no display needed. It is
a bench dependency, not a runtime one: ``pip install '.[bench]'`` brings it,
and a bench whose Python lacks it installs it with pip first.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = ROOT / "docs" / "plots"
# Shades of one colour per contender, the same in every figure: ours in reds,
# prometheus_client in blues, the peers in greys, anything else in greens.
SHADES = {
    "ours": ("#d62728", "#ff9896", "#8c1c13", "#f4a582"),
    "prometheus_client": ("#1f77b4", "#9ecae1", "#08306b"),
    "peer": ("#7f7f7f", "#c7c7c7", "#404040"),
    "": ("#2ca02c", "#98df8a", "#006d2c", "#bcbd22"),
}


def add_plot_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plot",
        metavar="DIR",
        default=str(DEFAULT_DIR),
        help=f"write PNG figures into DIR (default {DEFAULT_DIR.relative_to(ROOT)}; '' for none)",
    )


def _pyplot() -> Any:
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        print("(installing matplotlib for the figures)", file=sys.stderr)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "matplotlib",
            ],
            check=True,
        )
        matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def colours(names: Sequence[str]) -> list[str]:
    """A colour for each series name: the next shade of its contender's."""
    used: dict[str, int] = {}
    out = []
    for name in names:
        family = next(key for key in SHADES if key in name)
        index = used.get(family, 0)
        used[family] = index + 1
        out.append(SHADES[family][index % len(SHADES[family])])
    return out


def _legend(ax: Any, count: int) -> None:
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=min(count, 2))


def _save(fig: Any, directory: str, name: str, note: str) -> Path:
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, color="#555555", ha="left", va="bottom")
    path = Path(directory) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"figure: {path}")
    return path


def grouped_bars(
    directory: str,
    name: str,
    title: str,
    groups: Sequence[str],
    series: dict[str, Sequence[float]],
    unit: str,
    log: bool = False,
    note: str = "",
    group_colours: Sequence[str] | None = None,
) -> Path | None:
    """Horizontal bars: one group per row label, one bar per series in it
    (coloured by series, or by group when `group_colours` are given)."""
    if not directory:
        return None
    plt = _pyplot()
    height = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(8, 2.0 + 0.55 * len(groups) * max(1, len(series)) ** 0.5))
    for i, ((label, values), shade) in enumerate(
        zip(series.items(), colours(list(series)), strict=True)
    ):
        positions = [g + (i - (len(series) - 1) / 2) * height for g in range(len(groups))]
        bars = ax.barh(positions, values, height=height, label=label, color=group_colours or shade)
        ax.bar_label(bars, labels=[_short(v) for v in values], fontsize=7, padding=2)
    ax.set_yticks(range(len(groups)), groups)
    ax.invert_yaxis()
    ax.set_xlabel(unit)
    if log:
        ax.set_xscale("log")
    ax.set_title(title, fontsize=10)
    if group_colours is None:
        _legend(ax, len(series))
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout(rect=(0, 0.04 if note else 0, 1, 1))
    path = _save(fig, directory, name, note)
    plt.close(fig)
    return path


def lines(
    directory: str,
    name: str,
    title: str,
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    xlabel: str,
    ylabel: str,
    log: bool = True,
    note: str = "",
) -> Path | None:
    """One line with markers per series of (x, y) points, log-log by default."""
    if not directory:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    for (label, (xs, ys)), shade in zip(series.items(), colours(list(series)), strict=True):
        style = "-" if "ours" in label else "--"
        ax.plot(xs, ys, style, marker="o", label=label, color=shade)
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    _legend(ax, len(series))
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout(rect=(0, 0.04 if note else 0, 1, 1))
    path = _save(fig, directory, name, note)
    plt.close(fig)
    return path


def _short(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2g}"
