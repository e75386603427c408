"""A report page as blocks, rendered as Markdown (figures linked in side files) or one self-contained
HTML file (figures embedded as base64 ``data:`` URIs). Blocks: ("h", level, text), ("p", text),
("table", header, rows), ("img", path or PNG bytes, alt). Text in backticks is inline code: kept in
Markdown, ``<code>`` in HTML. Used by the evaluation report and the sweep report."""

from __future__ import annotations

import base64
import html
import io
import os
import re
from pathlib import Path
from typing import Any

from engine.errors import WorkbenchError
from engine.io import atomic


def figure_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def write_figures(figures: dict[str, bytes], folder: Path) -> dict[str, Path]:
    """The Markdown report's side files: each figure as ``folder/<name>.png``."""
    return {name: atomic.write_bytes(folder / f"{name}.png", data) for name, data in figures.items()}


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[tuple], base: Path) -> str:
    out = []
    for block in blocks:
        if block[0] == "h":
            out.append(f"{'#' * block[1]} {block[2]}")
        elif block[0] == "p":
            out.append(block[1])
        elif block[0] == "table":
            header, rows = block[1], block[2]
            out.append("| " + " | ".join(map(_md_cell, header)) + " |")
            out.append("|" + "---|" * len(header))
            out += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in rows]
        elif block[0] == "img":
            if isinstance(block[1], bytes):
                raise ValueError("a Markdown report links its images: write the figures to files first")
            rel = Path(os.path.relpath(block[1], base)).as_posix()
            out.append(f"![{block[2]}]({rel})")
        out.append("")
    return "\n".join(out)


_INLINE_CODE = re.compile(r"`([^`]+)`")


def _inline(text: Any) -> str:
    """Text as HTML: escaped, with Markdown's `inline code` as <code>."""
    return _INLINE_CODE.sub(r"<code>\1</code>", html.escape(str(text)))


def _data_uri(image: Path | bytes) -> str:
    data = image if isinstance(image, bytes) else Path(image).read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def to_html(blocks: list[tuple], title: str = "VLR evaluation report") -> str:
    out = ["<!DOCTYPE html>", "<html><head><meta charset=\"utf-8\"><title>" + html.escape(title) + "</title>",
           "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
           "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
           "text-align:left}img{max-width:100%;display:block;margin:0.5em 0}"
           "code{background:#f3f3f3;padding:0 3px;border-radius:3px}</style></head><body>"]
    for block in blocks:
        if block[0] == "h":
            out.append(f"<h{block[1]}>{_inline(block[2])}</h{block[1]}>")
        elif block[0] == "p":
            out.append(f"<p>{_inline(block[1])}</p>")
        elif block[0] == "table":
            out.append("<table><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in block[1]) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in block[2]]
            out.append("</table>")
        elif block[0] == "img":
            out.append(f"<figure><img alt=\"{html.escape(block[2])}\" src=\"{_data_uri(block[1])}\">"
                       f"<figcaption>{html.escape(block[2])}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out)


def write_page(out: Path, blocks: list[tuple], figures: dict[str, bytes], *, as_html: bool,
               title: str = "VLR evaluation report") -> Path:
    """Write the page to ``out``; ``blocks`` name figures as ("fig", key, alt), replaced here by the figure
    (embedded in HTML, a file in ``<out>_files/`` for Markdown, so HTML writes nothing else)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        placed: dict[str, Path | bytes] = dict(figures) if as_html else dict(
            write_figures(figures, out.parent / f"{out.stem}_files"))
    except OSError as exc:
        raise WorkbenchError(f"cannot write the report's figures beside {out} ({exc}). "
                             "Give a writable --out.") from None
    blocks = [("img", placed[b[1]], b[2]) if b[0] == "fig" else b for b in blocks if b[0] != "fig" or b[1] in placed]
    text = to_html(blocks, title) if as_html else to_markdown(blocks, out.parent)
    try:
        atomic.write_text(out, text)
    except OSError as exc:
        raise WorkbenchError(f"cannot write {out} ({exc}). Give a writable --out.") from None
    return out
