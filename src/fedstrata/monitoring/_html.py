"""HTML pieces shared by the run report and the run comparison: escaping, tables,
sections, figures and the self-contained page (inline CSS and SVG, no scripts)."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence

from fedstrata.monitoring._plots import Plot

__all__ = ["esc", "figures", "fmt_number", "note", "page", "section", "table"]

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ddd; }
h3 { font-size: 1.0em; margin-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ddd; padding: 0.2em 0.6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figure svg { max-width: 100%; height: auto; }
figcaption { font-size: 0.85em; color: #555; text-align: center; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
p.note { color: #666; font-style: italic; }
p.warn { color: #8a4b00; background: #fff4e0; padding: 0.4em 0.6em; }
"""
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def esc(value: object) -> str:
    """``value`` as HTML text."""
    return html.escape(str(value), quote=True)


def fmt_number(value: float | None, unit: str = "") -> str:
    """A metric's value for a table: ``—`` when not applicable."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    text = f"{value:.4g}"
    return f"{text} {unit}" if unit in {"s", "ε"} else text


def table(header: Sequence[str], rows: Iterable[Sequence[str]], numeric: set[int]) -> str:
    """A table of text cells (escaped here); columns in ``numeric`` align right."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = (
            f'<td class="num">{esc(c)}</td>' if i in numeric else f"<td>{esc(c)}</td>"
            for i, c in enumerate(row)
        )
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def note(text: str, css: str = "note") -> str:
    """A paragraph of (escaped) text: a ``note`` or a ``warn``ing."""
    return f'<p class="{css}">{esc(text)}</p>'


def figures(plots: Iterable[Plot]) -> str:
    """The plots as captioned figures."""
    return "\n".join(
        f"<figure>{p.svg}<figcaption>{esc(p.title)}</figcaption></figure>" for p in plots
    )


def section(title: str, body: str) -> str:
    """A titled section."""
    return f"<section><h2>{esc(title)}</h2>\n{body}\n</section>"


def page(title: str, sections: Sequence[str]) -> str:
    """The whole page: self-contained, its policy forbidding scripts and fetches."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{esc(title)}</h1>\n" + "\n".join(sections) + "\n</body>\n</html>\n"
    )
