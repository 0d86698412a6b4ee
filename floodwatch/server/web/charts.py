"""Small charts drawn on the server as SVG: sparklines and horizontal bar breakdowns.

Every label goes through markupsafe.escape (agent-sent keys such as country codes are untrusted).
The big time-series charts with axes and tooltips are drawn in the browser by static/charts.js.
"""

from __future__ import annotations

from typing import Any

from markupsafe import Markup, escape

PALETTE = ("#4f8cff", "#f5a524", "#2fbf71", "#e5484d", "#a36bff", "#12b5cb", "#ff7ab8", "#8d99ae")


def sparkline(values: list[float], width: int = 120, height: int = 28, threshold: float | None = None) -> Markup:
    """A polyline of the values; the threshold (when in range) as a dashed line."""
    top = max([*values, threshold or 0, 1.0])
    pts = ""
    if values:
        step = width / max(1, len(values) - 1)
        pts = " ".join(f"{i * step:.1f},{height - 2 - v / top * (height - 4):.1f}" for i, v in enumerate(values))
    line = ""
    if threshold:
        y = height - 2 - threshold / top * (height - 4)
        line = f'<line x1="0" x2="{width}" y1="{y:.1f}" y2="{y:.1f}" class="spark-thr"/>'
    return Markup(  # noqa: S704 - numbers only
        f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'preserveAspectRatio="none" role="img" aria-label="last 15 minutes">{line}'
        f'<polyline points="{pts}" class="spark-line"/></svg>')


def bars(data: dict[str, Any] | None, unit: str = "", limit: int = 12) -> Markup:
    """A horizontal bar per key, largest first; values as given (percentages or counts)."""
    items = sorted(((str(k), float(v)) for k, v in (data or {}).items() if isinstance(v, int | float)),
                   key=lambda kv: -kv[1])[:limit]
    if not items:
        return Markup('<p class="muted">none reported</p>')
    top = max(v for _, v in items) or 1.0
    rows, h = [], 22
    for i, (k, v) in enumerate(items):
        w = max(1.0, v / top * 100)
        color = PALETTE[i % len(PALETTE)]
        rows.append(f'<g transform="translate(0,{i * h})"><text x="0" y="15" class="bar-label">{escape(k[:24])}'
                    f'</text><rect x="110" y="4" width="{w * 1.6:.1f}" height="14" rx="2" fill="{color}"/>'
                    f'<text x="{114 + w * 1.6:.1f}" y="15" class="bar-value">{v:g}{escape(unit)}</text></g>')
    return Markup(  # noqa: S704 - labels escaped above, the rest numbers
        f'<svg class="bars" viewBox="0 0 340 {len(items) * h}" width="100%" role="img">'
        + "".join(rows) + "</svg>")


def human(n: float | None, unit: str = "") -> str:
    """1234567 -> '1.23 M' (pps, bps), None -> '-'."""
    if n is None:
        return "-"
    v = float(n)
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {suffix}{unit}"
    return f"{v:.4g} {unit}".rstrip()
