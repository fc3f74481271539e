"""Plotly figures as plain JSON data, built without ``plotly.graph_objects``.

plotly.py validates every property it is handed, which cost the chart endpoints most of their
time (45 ms for one line, 130 ms for 200 layers), while Plotly.js in the browser only needs
``{"data": [...], "layout": {...}}``. The builders in :mod:`collapsewatch_web.figures` and
:mod:`collapsewatch_web.heatmaps` write that data directly; this module holds what plotly.py
did for them: merging layout updates, the axis-spanning lines of ``add_hline``/``add_vline``
with the references plotly.py adds, and the one conversion of numpy arrays, NaN and inf to
JSON. The tests hand every figure to ``plotly.graph_objects.Figure``, which still validates
each key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal, TypedDict

import numpy as np


class Figure(TypedDict):
    """A Plotly figure as data; traces may hold numpy arrays until :func:`figure_json`."""

    data: list[dict[str, Any]]
    layout: dict[str, Any]


def new_figure() -> Figure:
    """An empty figure: no traces, an empty layout."""
    return {"data": [], "layout": {}}


def no_template() -> dict[str, Any]:
    """What ``layout.template = "none"`` becomes in plotly.py's output: no styling at all, so
    the page's colours show and each chart's JSON stays small."""
    return {"data": {"scatter": [{"type": "scatter"}]}}


def update_layout(fig: Figure, patch: Mapping[str, Any]) -> Figure:
    """``fig.update_layout(patch)`` on plain data: a dict merges into the one already there,
    any other value replaces it, and a dotted key ("xaxis.gridcolor", as ``Plotly.relayout``
    takes) reaches into nested dicts. Returns ``fig``."""
    _merge(fig["layout"], patch)
    return fig


def _merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    for key, value in patch.items():
        *parents, leaf = key.split(".")
        node = target
        for part in parents:
            node = node.setdefault(part, {})
        if isinstance(value, Mapping) and isinstance(node.get(leaf), dict):
            _merge(node[leaf], value)
        elif isinstance(value, Mapping):
            node[leaf] = {}
            _merge(node[leaf], value)
        else:
            node[leaf] = value


def add_hline(
    fig: Figure,
    y: float,
    *,
    line: dict[str, Any],
    name: str,
    annotation: dict[str, Any],
    layer: Literal["below", "above"] | None = None,
) -> None:
    """A horizontal line across the whole plot at ``y`` with its label, as plotly.py's
    ``add_hline`` writes them (label placed "top right" unless ``annotation`` says else)."""
    shape: dict[str, Any] = {"type": "line", "line": line, "name": name}
    shape.update(x0=0, x1=1, xref="x domain", y0=y, y1=y, yref="y")
    if layer is not None:
        shape["layer"] = layer
    label = {"x": 1, "xanchor": "right", "y": y, "yanchor": "bottom", "showarrow": False}
    _add_spanning(fig, shape, {**label, **annotation, "xref": "x domain", "yref": "y"})


def add_vline(
    fig: Figure,
    x: float,
    *,
    line: dict[str, Any],
    name: str,
    annotation: dict[str, Any],
    annotation_side: Literal["left", "right"],
) -> None:
    """A vertical line across the whole plot at ``x`` with its label at the top, on
    ``annotation_side`` of the line, as plotly.py's ``add_vline`` with
    ``annotation_position="top left"`` or ``"top right"`` writes them."""
    shape: dict[str, Any] = {"type": "line", "line": line, "name": name}
    shape.update(x0=x, x1=x, xref="x", y0=0, y1=1, yref="y domain")
    # the label's anchor is its side facing the line: left of the line means anchored right
    anchor = "right" if annotation_side == "left" else "left"
    label = {"x": x, "xanchor": anchor, "y": 1, "yanchor": "top", "showarrow": False}
    _add_spanning(fig, shape, {**label, **annotation, "xref": "x", "yref": "y domain"})


def _add_spanning(fig: Figure, shape: dict[str, Any], annotation: dict[str, Any]) -> None:
    layout = fig["layout"]
    layout.setdefault("shapes", []).append(shape)
    layout.setdefault("annotations", []).append(annotation)


def figure_json(fig: Figure) -> dict[str, Any]:
    """The figure as plain JSON data ({"data", "layout"}) ready to embed in a page or send:
    arrays become lists, and NaN or infinite values ``null``, which Plotly draws as gaps.
    The only place that does so; the result shares nothing with ``fig``."""
    # lists, not base64 typed arrays (what plotly.py's to_dict makes of numpy arrays): live
    # updates (extendTraces, smoothing) read the arrays as they are
    return {"data": [_plain(t) for t in fig["data"]], "layout": _plain(fig["layout"])}


def _plain(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind == "f":
            bad = ~np.isfinite(obj)
            if bad.any():
                # object dtype so tolist() gives None where the float was not finite
                out = obj.astype(object)
                out[bad] = None
                return out.tolist()
        return obj.tolist()
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return _plain(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
