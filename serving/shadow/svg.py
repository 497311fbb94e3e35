"""A horizontal bar chart as SVG text (no plotting library is a runtime dependency):
one bar per feature, its length the mismatch rate, split into segments by cause."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

COLORS = ("#d62728", "#ff7f0e", "#9467bd", "#1f77b4", "#8c564b", "#7f7f7f", "#2ca02c", "#e377c2")
ROW_PX, LABEL_PX, BAR_PX, TOP_PX = 22, 340, 420, 40


def rate_bars(bars: Mapping[str, tuple[float, Mapping[str, float]]], causes: Sequence[str]) -> str:
    """``bars``: feature -> (mismatch rate, {cause: share of rows}); ``causes`` fixes the colors."""
    color = {c: COLORS[i % len(COLORS)] for i, c in enumerate(causes)}
    used = [c for c in causes if any(c in parts for _, parts in bars.values())]
    height = TOP_PX + ROW_PX * max(len(bars), 1) + 30 + 18 * len(used)
    width = LABEL_PX + BAR_PX + 80
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        '<text x="10" y="20" font-size="14">Mismatch rate per feature (0 to 100 % of rows compared)</text>',
    ]
    for row, (name, (rate, parts)) in enumerate(bars.items()):
        y = TOP_PX + row * ROW_PX
        out.append(f'<text x="{LABEL_PX - 6}" y="{y + 14}" text-anchor="end">{escape(name)}</text>')
        out.append(f'<rect x="{LABEL_PX}" y="{y + 3}" width="{BAR_PX}" height="14" fill="#eeeeee"/>')
        x = float(LABEL_PX)
        for cause in causes:
            share = parts.get(cause, 0.0)
            if share > 0:
                w = share * BAR_PX
                out.append(
                    f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="14" fill="{color[cause]}">'
                    f"<title>{escape(cause)}: {share:.2%}</title></rect>"
                )
                x += w
        out.append(f'<text x="{LABEL_PX + BAR_PX + 6}" y="{y + 14}">{rate:.1%}</text>')
    legend_y = TOP_PX + ROW_PX * max(len(bars), 1) + 20
    for i, cause in enumerate(used):
        y = legend_y + 18 * i
        out.append(f'<rect x="{LABEL_PX}" y="{y}" width="12" height="12" fill="{color[cause]}"/>')
        out.append(f'<text x="{LABEL_PX + 18}" y="{y + 11}">{escape(cause)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
