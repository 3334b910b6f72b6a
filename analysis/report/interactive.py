"""The report's interactive figures (report.html): figures.FigureData drawn with plotly.

Zoom (drag), pan, reset (double-click or the toolbar), hover with the exact values (for the
concurrency figures the table's own text, e.g. "98.2 ± 3.1"), legend entries that hide or show an
endpoint. plotly.js is inlined once per page (``library_html``), so the file needs no network.

Text from servers and configs (model names) is escaped for plotly's pseudo-HTML labels here, and
plotly's JSON writer escapes ``<``, ``>`` and ``/``, so nothing can close the script element.
"""

from __future__ import annotations

import html
import math
import re

import numpy as np
from plotly.io import to_html
from plotly.offline import get_plotlyjs

from .figures import FigureData, Panel, Series

CONFIG = {
    "displaylogo": False,          # no link to plotly's site
    "responsive": True,            # follows the page's width
    "typesetMath": False,          # '$...$' in a model name is text, not LaTeX
    "modeBarButtonsToRemove": ["select2d", "lasso2d"],
    "toImageButtonOptions": {"format": "png", "scale": 2},
}
HEIGHT_ROW = 430        # px, a figure of panels side by side
HEIGHT_PANEL = 170      # px per stacked panel (time series)
BAND = "#f2d16b"
_SYMBOLS = {"o": "circle", "s": "square"}


def library_html() -> str:
    """plotly.js, inlined: put once in a page before the first figure."""
    return ('<script type="text/javascript">window.PlotlyConfig = {MathJaxConfig: "local"};'
            f'</script>\n<script type="text/javascript">{get_plotlyjs()}</script>')


def _t(text: str) -> str:
    """Plain text for plotly's labels (which read a subset of HTML): escaped."""
    return html.escape(str(text), quote=False)


def _values(a) -> list:
    """Numbers as JSON lists: NaN and inf become null (plotly leaves a gap)."""
    return [None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v
            for v in np.asarray(a, dtype=float).tolist()]


def _hover(s: Series, x_name: str) -> str:
    what = _t(s.quantity or s.name) + (f" ({_t(s.unit)})" if s.unit else "")
    value = "%{customdata}" if s.text is not None else f"%{{y:{s.y_format}}}"
    return (f"<b>%{{fullData.name}}</b><br>{what}: {value}<br>{_t(x_name)}: %{{x}}"
            "<extra></extra>")


def _trace(s: Series, axis: int, x_name: str, show_legend: bool) -> dict:
    sfx = "" if axis == 1 else str(axis)
    tr = {"type": "scatter", "x": _values(s.x), "y": _values(s.y), "name": _t(s.name),
          "xaxis": "x" + sfx, "yaxis": "y" + sfx, "hovertemplate": _hover(s, x_name),
          "mode": "lines+markers" if s.marker else "lines",
          "line": {"color": s.color, "width": s.lw, "dash": "dash" if s.dash else "solid",
                   "shape": "hv" if s.step else "linear"},
          "connectgaps": False, "showlegend": show_legend}
    if s.marker:
        tr["marker"] = {"symbol": _SYMBOLS.get(s.marker, "circle"), "size": 7, "color": s.color}
    if s.err is not None:
        tr["error_y"] = {"type": "data", "array": _values(s.err), "visible": True,
                         "color": s.color, "thickness": 1.2, "width": 4}
    if s.text is not None:
        tr["customdata"] = [_t(v) for v in s.text]
    if s.group:
        tr["legendgroup"] = _t(s.group)
    return tr


def _axes(panel: Panel, i: int, n: int, columns: bool) -> tuple[dict, dict]:
    gap = 0.06 if columns else 0.08
    size = (1 - gap * (n - 1)) / n
    lo = (n - 1 - i) * (size + gap) if columns else i * (size + gap)
    span = [max(0.0, lo), min(1.0, lo + size)]
    sfx = "" if i == 0 else str(i + 1)
    x = {"anchor": "y" + sfx, "showgrid": True, "gridcolor": "#e5e5e5", "zeroline": False,
         "showline": True, "linecolor": "#888", "mirror": True, "ticks": "outside"}
    y = {"anchor": "x" + sfx, "title": {"text": _t(panel.ylabel),
                                        "font": {"size": 10 if panel.ylabel_small else 13}},
         "showgrid": True, "gridcolor": "#e5e5e5", "zeroline": False, "showline": True,
         "linecolor": "#888", "mirror": True, "ticks": "outside", "domain": [0, 1]}
    if columns:
        y["domain"] = span
        x["domain"] = [0, 1]
        if i > 0:
            x["matches"] = "x"          # one zoom for all the stacked panels
        if i < n - 1:
            x["showticklabels"] = False
    else:
        x["domain"] = span
    if panel.xlabel:
        x["title"] = {"text": _t(panel.xlabel)}
    if panel.x_levels:
        x["tickvals"] = list(panel.x_levels)
        x["ticktext"] = [f"{v:g}" for v in panel.x_levels]
        if panel.x_log:
            x["type"] = "log"
    if panel.y_from_zero and panel.series:     # as the PNG: from 0 (CI bars cut at 0)
        tops = [np.nanmax(np.asarray(s.y, float) + (0 if s.err is None else s.err))
                for s in panel.series if np.isfinite(np.asarray(s.y, float)).any()]
        top = max(tops, default=float("nan"))
        if math.isfinite(top) and top > 0:
            y["range"] = [0, top * 1.05]
        else:
            y["rangemode"] = "tozero"
    return x, y


def height(data: FigureData) -> int:
    return HEIGHT_PANEL * len(data.panels) + 120 if data.columns else HEIGHT_ROW


def div_id(data: FigureData) -> str:
    """The plot's element id: the figure id with anything but [A-Za-z0-9_-] replaced."""
    return "plot-" + re.sub(r"[^A-Za-z0-9_-]", "_", data.id)


def figure_dict(data: FigureData) -> dict:
    """The plotly figure (data and layout as plain dicts) of one FigureData."""
    n = len(data.panels)
    traces, shapes, notes = [], [], []
    layout: dict = {
        "title": {"text": _t(data.title), "x": 0.5, "xanchor": "center", "font": {"size": 15}},
        "height": height(data),
        "margin": {"l": 70, "r": 20, "t": 70, "b": 60},
        "plot_bgcolor": "white", "paper_bgcolor": "white", "hovermode": "closest",
        "legend": {"font": {"size": 11}, "groupclick": "togglegroup"},
        "showlegend": any(p.legend and p.series for p in data.panels)}
    seen_groups: set[str] = set()
    for i, panel in enumerate(data.panels):
        xa, ya = _axes(panel, i, n, data.columns)
        sfx = "" if i == 0 else str(i + 1)
        layout["xaxis" + sfx], layout["yaxis" + sfx] = xa, ya
        for s in panel.series:
            # one legend entry per endpoint (its group) across panels; a click hides the group
            show = panel.legend and (not s.group or s.group not in seen_groups)
            if s.group and panel.legend:
                seen_groups.add(s.group)
            traces.append(_trace(s, i + 1, data.x_name, show))
        if panel.title:
            dom = xa["domain"] if not data.columns else [0, 1]
            notes.append({"text": _t(panel.title), "x": (dom[0] + dom[1]) / 2,
                          "xref": "paper", "xanchor": "center", "y": ya["domain"][1], "yref": "paper",
                          "yanchor": "bottom", "showarrow": False, "font": {"size": 11}})
        if not panel.series and panel.legend:
            notes.append({"text": "no data", "xref": f"x{sfx} domain", "yref": f"y{sfx} domain",
                          "x": 0.5, "y": 0.5, "showarrow": False})
        for t0, t1, label in panel.bands:
            shapes.append({"type": "rect", "xref": "x" + sfx, "yref": f"y{sfx} domain",
                           "x0": t0, "x1": t1, "y0": 0, "y1": 1, "fillcolor": BAND,
                           "opacity": 0.25, "line": {"width": 0}, "layer": "below"})
            if panel.band_labels:
                notes.append({"text": _t(label), "x": (t0 + t1) / 2, "xref": "x" + sfx,
                              "y": 1, "yref": f"y{sfx} domain", "yanchor": "bottom",
                              "showarrow": False, "font": {"size": 10}})
    if data.corner_note:
        notes.append({"text": _t(data.corner_note), "x": 1, "xref": "paper", "xanchor": "right",
                      "y": 1, "yref": "paper", "yanchor": "bottom", "showarrow": False,
                      "font": {"size": 10}})
    layout["shapes"], layout["annotations"] = shapes, notes
    if data.columns:
        layout["margin"]["t"] = 80
    return {"data": traces, "layout": layout}


def render(data: FigureData) -> str:
    """A <div> and its <script> drawing the figure (plotly.js must be on the page already)."""
    config = dict(CONFIG, toImageButtonOptions=dict(CONFIG["toImageButtonOptions"],
                                                    filename=f"figure-{data.id}"))
    return to_html(figure_dict(data), full_html=False, include_plotlyjs=False, config=config,
                   div_id=div_id(data), validate=False, default_width="100%",
                   default_height=f"{height(data)}px")


