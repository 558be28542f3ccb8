"""The claim x kernel matrix as files: matrix.json, matrix.md and the page
index.html, a coloured grid whose cells link to what was measured and to the
guests' console logs.

`python -m harness matrix-page DIR` writes `DIR/index.html` again from
`DIR/matrix.json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from ..util import write_text
from .matrix import OUTCOME_MARK, VERBOSE_KEYS, Cell, Matrix, render_markdown
from .page import esc, file_link, html_page


def compact_json(value: Any, width: int = 110, indent: str = "") -> str:
    """JSON that keeps a value on one line when it fits in `width`, so long
    records stay readable (lists of numbers do not take a line per number)."""
    flat = json.dumps(value, default=str, ensure_ascii=False)
    if len(indent) + len(flat) <= width or not isinstance(value, (dict, list)) or not value:
        return flat
    inner = indent + "  "
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(str(k))}: {compact_json(v, width, inner).lstrip()}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    return "[\n" + ",\n".join(inner + compact_json(v, width, inner).lstrip() for v in value) + "\n" + indent + "]"


def _cell_class(c: Cell) -> tuple[str, str, str]:
    """(CSS class, outcome mark, what it says of the claim)."""
    mark = OUTCOME_MARK.get(c.outcome, c.outcome or "?")
    if c.outcome in ("failed", "error"):
        return "m-fail", mark, "test failed" if c.outcome == "failed" else "setup/teardown"
    if c.outcome == "skipped" or not c.outcome:
        return "m-skip", mark, ""
    holds = c.holds()
    if holds is None:
        return "m-fact", mark, "fact"
    return ("m-holds", mark, "holds") if holds else ("m-not", mark, "does not hold")


def matrix_html(mx: Matrix, page_dir: Path, preamble: Sequence[str] = ()) -> str:
    """The claim x kernel grid, coloured; each cell links to its measured values and logs below.
    `preamble`: HTML put under the title, above the grid (the nightly's changes)."""
    totals = ", ".join(f"{k} {v}" for k, v in mx.totals().items()) or "no results"
    kernels = ", ".join(f"{k} {v.get('release', '?')} ({v.get('version', '?')})" for k, v in mx.versions.items())
    body = [
        "<h1>The seed's claims, per kernel</h1>",
        *preamble,
        f'<p class="meta">{len(mx.claims)} tests on {len(mx.kernels)} kernel(s): {esc(totals)}. '
        "A test passes when the kernel behaves as measured; <i>does not hold</i> marks a claim of the "
        "2002 thread that the measurement contradicts. Click a cell for what was measured.</p>",
        *([f'<p class="meta">Kernels: {esc(kernels)}</p>'] if kernels else []),
        '<p class="legend"><span class="m-holds">holds</span><span class="m-not">does not hold</span>'
        '<span class="m-fact">fact (measured, no claim)</span><span class="m-fail">failed / error</span>'
        '<span class="m-skip">skipped</span></p>',
        '<table class="matrix"><tr><th>claim</th>' + "".join(f"<th>{esc(k)}</th>" for k in mx.kernels) + "</tr>",
    ]
    ids: dict[tuple[str, str], str] = {}
    for r, claim in enumerate(mx.claims):
        row = [f"<td><code>{esc(claim)}</code></td>"]
        for k, kernel in enumerate(mx.kernels):
            c = mx.cell(claim, kernel)
            if c is None:
                row.append('<td class="m-skip">–</td>')
                continue
            ids[(claim, kernel)] = f"c{r}-{k}"
            cls, mark, says = _cell_class(c)
            row.append(
                f'<td class="cell {cls}"><a href="#c{r}-{k}"><b>{esc(mark)}</b><br>{esc(says)}<br>'
                f"<small>{c.seconds:g} s</small></a></td>"
            )
        body.append("<tr>" + "".join(row) + "</tr>")
    body.append("</table>")
    body.append("<h2>Measured, per cell</h2>")
    for claim in mx.claims:
        body.append(f"<h3><code>{esc(claim)}</code></h3>")
        for kernel in mx.kernels:
            c = mx.cell(claim, kernel)
            if c is None:
                continue
            cls, mark, says = _cell_class(c)
            text = f"{mark}, {says}" if says else mark
            logs = ", ".join(file_link(p, page_dir) for p in c.console_logs) or (
                '<span class="note">not recorded (only logs of failed tests are kept unless pytest runs with '
                "--keep-console-logs, as make matrix does)</span>"
            )
            body.append(
                f'<div class="detail" id="{ids[(claim, kernel)]}"><b>{esc(kernel)}</b>: '
                f'<span class="badge {cls}">{esc(text)}</span> in {c.seconds:g} s. Console log: {logs}'
            )
            if c.measured:
                short = {k: v for k, v in c.measured.items() if k not in VERBOSE_KEYS}
                body.append(f"<pre>{esc(compact_json(short))}</pre>")
                for key in (k for k in VERBOSE_KEYS if k in c.measured):
                    record = compact_json(c.measured[key])
                    body.append(
                        f"<details><summary>{esc(key)} ({record.count(chr(10)) + 1} lines)</summary>"
                        f"<pre>{esc(record)}</pre></details>"
                    )
            if c.message:
                body.append(f"<pre>{esc(c.message)}</pre>")
            body.append("</div>")
    return html_page("Claims x kernels", body)


def write_matrix_html(mx: Matrix, out: Path, preamble: Sequence[str] = ()) -> Path:
    write_text(out, matrix_html(mx, out.parent, preamble))
    return out


def write_matrix(mx: Matrix, out_dir: Path, md_head: str = "", html_head: Sequence[str] = ()) -> tuple[Path, Path]:
    """matrix.json and matrix.md (returned), and the page index.html beside them;
    `md_head` / `html_head` go at the top of the Markdown / the page."""
    out_dir.mkdir(parents=True, exist_ok=True)
    j, m = out_dir / "matrix.json", out_dir / "matrix.md"
    write_text(j, json.dumps(mx.to_json(), indent=1, default=str) + "\n")
    text = render_markdown(mx)
    if md_head:  # under the title
        title, rest = text.split("\n", 1)
        text = f"{title}\n\n{md_head.rstrip()}\n{rest}"
    write_text(m, text)
    write_matrix_html(mx, out_dir / "index.html", html_head)
    return j, m
