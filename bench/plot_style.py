"""One look for every benchmark plot: a colour per target, legends outside the data, a visible
SLO line and a caption under the axes when the plot needs one to be read.

Promises:

- ``target_colors(names)`` gives each target one colour, by its place in the benchmark's target
  list, so the same target has the same colour in every plot of a benchmark.
- ``legend_outside(ax)`` puts the legend right of the axes, never over a curve.
- ``slo_line(ax, slo_ms)`` draws the p95 objective as a red dashed line, labelled on the plot.
- ``caption(fig, text)`` writes ``text`` wrapped under the axes (call it after the plotting and
  before saving: it reserves room at the bottom).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
SLO_COLOR = "#c00000"
FIGSIZE = (9.5, 4.8)


def target_colors(names: Sequence[str]) -> dict[str, str]:
    """``name -> colour``, one per target in order (the palette repeats after ten)."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(dict.fromkeys(names))}


def legend_outside(ax: Axes, source: Axes | None = None) -> None:
    """The legend right of the axes, in small type; with ``source``, that axes' entries (one
    legend for side-by-side panels)."""
    handles, labels = (source or ax).get_legend_handles_labels()
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
              frameon=False, borderaxespad=0.0)


def slo_line(ax: Axes, slo_ms: float) -> None:
    """The p95 objective across the plot, labelled at its right end."""
    ax.axhline(slo_ms, color=SLO_COLOR, lw=1.6, ls="--", label=f"p95 SLO {slo_ms:g} ms",
               zorder=1)
    ax.annotate(f"SLO {slo_ms:g} ms", xy=(1.0, slo_ms), xycoords=("axes fraction", "data"),
                xytext=(-4, 3), textcoords="offset points", ha="right", va="bottom",
                color=SLO_COLOR, fontsize=8)


def caption(fig: Figure, text: str, width: int = 120) -> None:
    """``text`` wrapped under the axes of ``fig``."""
    lines = textwrap.wrap(text.replace("$", r"\$"), width)  # "$" is not mathtext here
    bottom = 0.12 + 0.045 * len(lines)
    fig.subplots_adjust(bottom=bottom)
    fig.text(0.01, 0.01, "\n".join(lines), ha="left", va="bottom", fontsize=8, color="#333333")


def finish(fig: Figure, text: str | None = None) -> Figure:
    """Lay ``fig`` out with room for the outside legend and, when given, a caption."""
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 1.0))
    fig.subplots_adjust(right=0.70)
    if text:
        caption(fig, text)
    return fig
