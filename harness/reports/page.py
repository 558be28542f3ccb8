"""What every HTML page shares: one inline style sheet, escaping, relative
links to files under the build folder, and the page frame.

Each page is one self-contained file: the plots are PNGs inside it (data
URIs), the style is inline, there is no script and nothing from the network;
the only links are relative ones to console logs under the build folder.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Sequence

STYLE = """
body { font: 15px/1.45 "DejaVu Sans", sans-serif; margin: 24px 32px; color: #1b1b1b; max-width: 1400px; }
h1 { font-size: 24px; margin: 0 0 6px; } h2 { font-size: 19px; margin: 32px 0 6px; }
h3 { font-size: 16px; margin: 18px 0 4px; }
.meta { color: #333; margin: 2px 0; }
table { border-collapse: collapse; margin: 10px 0; }
th, td { border: 1px solid #c8c8c8; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, pre { font: 13px/1.35 "DejaVu Sans Mono", monospace; }
pre { background: #f6f6f6; border: 1px solid #ddd; padding: 8px; overflow-x: auto; white-space: pre-wrap; }
img { max-width: 100%; height: auto; display: block; margin: 8px 0; }
.v-clean { background: #d8f3dc; } .v-spurious { background: #ffe8b3; } .v-fail { background: #ffccd5; }
.v-control { background: #dbe7ff; }
.problem { color: #9d0208; font-weight: bold; }
.note { color: #555; font-style: italic; }
section.run { border-top: 2px solid #ccc; margin-top: 28px; }
.m-holds { background: #b7e4c7; } .m-not { background: #ffd6a5; } .m-fail { background: #ff8fa3; }
.m-fact { background: #cde2ff; } .m-skip { background: #e9e9e9; }
td.cell { white-space: nowrap; }
table.matrix td:first-child { min-width: 260px; max-width: 420px; overflow-wrap: anywhere; }
td.cell a { display: block; color: inherit; text-decoration: none; }
td.cell a:hover { text-decoration: underline; }
.legend span { padding: 2px 8px; margin-right: 6px; border: 1px solid #bbb; }
div.detail:target { outline: 3px solid #457b9d; }
div.detail { margin: 8px 0 16px; padding: 4px 10px; border-left: 4px solid #ccc; }
.badge { padding: 1px 6px; border: 1px solid #bbb; }
summary { cursor: pointer; color: #1d3557; }
"""


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def file_link(path: str, page_dir: Path) -> str:
    """A relative link to a file under the build folder, or its path when it is gone."""
    if not path:
        return '<span class="note">none</span>'
    p = Path(path)
    if not p.is_file():
        return f'<code>{esc(p.name)}</code> <span class="note">(not kept)</span>'
    rel = os.path.relpath(p.resolve(), page_dir.resolve())
    return f'<a href="{esc(rel)}"><code>{esc(p.name)}</code></a>'


def html_page(title: str, body: Sequence[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
