"""The report as one HTML file (report.html): its CSS, every text escaped, figures inline.

Figures with data (figures.FigureData) are drawn interactively by plotly (interactive.py), with
plotly.js inlined once before the first; their PNG stays in a <noscript> for viewers without
scripts. The others are inline PNGs. Nothing is fetched when the page is viewed.
"""

from __future__ import annotations

import base64
import html

from .model import Section, Table, report_title

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em;line-height:1.4}
h1{font-size:1.6em}h2{font-size:1.3em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
h3{font-size:1.05em}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.85em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right;vertical-align:top}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.note{color:#555;font-size:.85em;max-width:60em}
.warn{background:#fff4e5;border:1px solid #f0b36b;padding:.5em 1em}
.ok{background:#eef8ee;border:1px solid #9c9;padding:.5em 1em}
figure{margin:1em 0}figcaption{color:#555;font-size:.85em}img{max-width:100%}
.plot{border:1px solid #eee}
dl{font-size:.85em}dt{font-weight:600;margin-top:.4em}dd{margin-left:1.5em}
nav a{margin-right:.8em;font-size:.9em}
"""


def _html_table(t: Table) -> str:
    e = html.escape
    head = "".join(f"<th>{e(str(c))}</th>" for c in t.display.columns)
    body = []
    for row in t.display.itertuples(index=False):
        body.append("<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in row) + "</tr>")
    return (f'<table id="table-{e(t.name)}"><thead><tr>{head}</tr></thead><tbody>'
            + "".join(body) + "</tbody></table>")


INTERACTIVE_HINT = ("Interactive: drag to zoom (one axis: drag along it), double-click to "
                    "reset, hover a point for its value, click a legend entry to hide or show "
                    "that endpoint; the toolbar (top right) pans and saves a PNG.")


def _figure(payload, library: list[bool]) -> str:
    """One figure: interactive when it has data (plotly.js inlined before the first one)."""
    e = html.escape
    fid, caption, png, data = payload
    img = (f'<img alt="{e(caption)}" src="data:image/png;base64,'
           f'{base64.b64encode(png).decode("ascii")}">')
    if data is None:
        return f'<figure id="fig-{e(fid)}">{img}<figcaption>{e(caption)}</figcaption></figure>'
    from . import interactive
    lib = ""
    if not library[0]:
        lib, library[0] = interactive.library_html() + "\n", True
    return (f'{lib}<figure id="fig-{e(fid)}" class="interactive"><div class="plot">'
            f"{interactive.render(data)}</div><noscript>{img}</noscript>"
            f"<figcaption>{e(caption)} <span class=\"hint\">{e(INTERACTIVE_HINT)}</span>"
            "</figcaption></figure>")


def render_html(result, sections: list[Section]) -> str:
    e = html.escape
    library = [False]     # plotly.js inlined yet?
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{e(report_title(result))}</title><style>{_CSS}</style></head><body>",
             f"<h1>{e(report_title(result))}</h1>",
             "<nav>" + "".join(f'<a href="#{e(s.id)}">{e(s.title)}</a>' for s in sections)
             + "</nav>"]
    for s in sections:
        parts.append(f'<section id="{e(s.id)}"><h2>{e(s.title)}</h2>')
        for kind, payload in s.blocks:
            if kind == "p":
                parts.append(f"<p>{e(payload)}</p>")
            elif kind == "list":
                cls = "warn" if s.id == "warnings" else ""
                parts.append(f'<ul class="{cls}">' + "".join(f"<li>{e(x)}</li>" for x in payload)
                             + "</ul>")
            elif kind == "table":
                if payload.title and payload.title != s.title:
                    parts.append(f"<h3>{e(payload.title)}</h3>")
                parts.append(_html_table(payload))
                if payload.note:
                    parts.append(f'<p class="note">{e(payload.note)}</p>')
            elif kind == "figure":
                parts.append(_figure(payload, library))
            elif kind == "defs":
                parts.append("<dl>" + "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in payload)
                             + "</dl>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)
