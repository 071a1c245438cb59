"""The figures a report draws itself (the rest are the PNGs a run wrote): per-epoch curves, of one run
or of several runs overlaid, as PNG bytes."""

from __future__ import annotations

import io

from matplotlib.figure import Figure

from visionlab.figures import plt

#: (legend label, [(epoch, value)]) lines of one panel
Lines = list[tuple[str, list[tuple[int, float]]]]


def png(fig: Figure, dpi: int = 90) -> bytes:
    """`fig` as PNG bytes, closed afterwards."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def curves_png(panels: list[tuple[str, Lines]]) -> bytes | None:
    """One panel per (title, lines) side by side, value against epoch; None when nothing is plotted."""
    panels = [(title, [(label, pts) for label, pts in lines if pts]) for title, lines in panels]
    panels = [(title, lines) for title, lines in panels if lines]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.4), squeeze=False)
    for ax, (title, lines) in zip(axes.flat, panels, strict=True):
        for label, points in lines:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o" if len(xs) < 25 else None, ms=3, lw=1.5, label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return png(fig)
