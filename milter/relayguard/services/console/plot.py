"""The overview's 24-hour plot as inline SVG: stacked bars per hour, coloured by classes from the
stylesheet (the CSP forbids inline style), built from numbers only."""

from __future__ import annotations

from datetime import UTC, datetime

from markupsafe import Markup, escape

WIDTH, HEIGHT, AXIS = 960, 200, 24


def stacked_bars(series: list[tuple[int, dict[str, int]]], groups: tuple[str, ...]) -> Markup:
    """One bar per (hour start, counts by group); an empty plot says so."""
    top = max((sum(counts.values()) for _, counts in series), default=0)
    parts = [
        f'<svg class="plot" viewBox="0 0 {WIDTH} {HEIGHT + AXIS}" role="img"'
        ' aria-label="messages per hour, last 24 hours">'
    ]
    if top == 0:
        parts.append(f'<text x="{WIDTH // 2}" y="{HEIGHT // 2}" class="empty">no messages</text>')
    slot = WIDTH / max(1, len(series))
    for i, (hour, counts) in enumerate(series):
        x = i * slot + 2
        y = float(HEIGHT)
        for group in groups:
            n = counts.get(group, 0)
            if not n or not top:
                continue
            height = n / top * (HEIGHT - 10)
            y -= height
            label = escape(f"{_hour(hour)}: {n} {group}")
            parts.append(
                f'<rect class="bar-{group}" x="{x:.1f}" y="{y:.1f}" width="{slot - 4:.1f}"'
                f' height="{height:.1f}"><title>{label}</title></rect>'
            )
        if i % 3 == 0:
            parts.append(
                f'<text class="axis" x="{x:.1f}" y="{HEIGHT + 16}">{escape(_hour(hour))}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (numbers and escaped labels only)


def _hour(start: int) -> str:
    return datetime.fromtimestamp(start, UTC).strftime("%H:00")
