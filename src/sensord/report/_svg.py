"""What every sensord report page shares: its size, colours, times and page shell.

Pages are self-contained: inline SVG drawn here, no plotting library, nothing fetched
(the edge box and the operator's laptop may both be offline).
"""

from __future__ import annotations

import html
from datetime import UTC, datetime

WIDTH, PLOT_H, PAD = 900, 170, 40
LINE_COLOURS = ("#1f5fa8", "#2a9d5c", "#8a4fbf", "#c2572b")


def iso(ts: float) -> str:
    """A time as the reports print it (UTC)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def page(title: str, body: str) -> str:
    """A whole HTML page: `title` as its title and heading, then `body`."""
    t = html.escape(title)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{t}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:{WIDTH + 150}px}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}
svg{{display:block;margin:0.5em 0;background:#fafafa}}</style></head><body>
<h1>{t}</h1>
{body}
</body></html>
"""
