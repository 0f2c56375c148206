"""report.html: one self-contained page (inline SVG and CSS, no script, no network).

The plots are drawn here in a few lines of SVG rather than with a plotting library:
the page must open offline, years later, in any browser, and the shapes are simple
(a line chart and bars with intervals).
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

COLOURS = {"tuned": "#2563eb", "base": "#6b7280", "fewshot": "#d97706", "retrieval": "#059669",
           "train": "#93c5fd", "validation": "#1d4ed8"}
STATUS = {"green": "#15803d", "amber": "#b45309", "red": "#b91c1c", "not_proven": "#4b5563"}

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#111827;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #e5e7eb}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #e5e7eb;padding:.25rem .5rem;
vertical-align:top;text-align:left}th{background:#f9fafb}td.n{text-align:right;font-variant-numeric:tabular-nums}
.status{display:inline-block;color:#fff;padding:.1rem .6rem;border-radius:.3rem;font-weight:600}
pre{white-space:pre-wrap;margin:0;max-width:32rem;font-size:12px}.muted{color:#6b7280}
"""


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else escape(str(value))


def _finite(values: list[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]


def line_chart(series: dict[str, list[tuple[float, float]]], width: int = 640, height: int = 260) -> str:
    """Loss curves: x is the step, one polyline (and dots) per series."""
    points = [p for values in series.values() for p in values if math.isfinite(p[1])]
    if not points:
        return "<p class='muted'>no training metrics in this run directory</p>"
    pad = 44
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points) or 1.0
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1e-6)

    def xy(x: float, y: float) -> tuple[float, float]:
        return (pad + (x - x0) / (x1 - x0) * (width - 2 * pad),
                height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad))

    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img'>",
             f"<line x1='{pad}' y1='{height - pad}' x2='{width - pad}' y2='{height - pad}' "
             "stroke='#9ca3af'/>",
             f"<line x1='{pad}' y1='{pad}' x2='{pad}' y2='{height - pad}' stroke='#9ca3af'/>"]
    for value in (y0, (y0 + y1) / 2, y1):
        _, y = xy(x0, value)
        parts.append(f"<text x='{pad - 4}' y='{y + 4:.1f}' font-size='10' text-anchor='end'>"
                     f"{value:.2f}</text>")
    parts.append(f"<text x='{width - pad}' y='{height - pad + 16}' font-size='10' text-anchor='end'>"
                 f"step {x1:g}</text>")
    for i, (name, values) in enumerate(series.items()):
        colour = COLOURS.get(name, "#111827")
        coords = [xy(x, y) for x, y in values if math.isfinite(y)]
        if len(coords) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
            parts.append(f"<polyline fill='none' stroke='{colour}' stroke-width='1.5' points='{path}'/>")
        if name == "validation":
            parts += [f"<circle cx='{x:.1f}' cy='{y:.1f}' r='3' fill='{colour}'/>" for x, y in coords]
        parts.append(f"<text x='{width - pad}' y='{pad + 14 * i}' font-size='11' text-anchor='end' "
                     f"fill='{colour}'>{escape(name)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def interval_bars(rows: list[tuple[str, float, float, float]], lower_is_better: bool = False,
                  width: int = 520) -> str:
    """Horizontal bars (value) with whiskers (interval), one row per system."""
    values = _finite([v for row in rows for v in row[1:]])
    if not values:
        return ""
    top = max(values) * 1.05 or 1.0
    label_w, row_h = 90, 24
    height = row_h * len(rows) + 20
    scale = (width - label_w - 60) / top
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img'>"]
    for i, (name, value, low, high) in enumerate(rows):
        y = 6 + i * row_h
        colour = COLOURS.get(name, "#374151")
        parts.append(f"<text x='{label_w - 6}' y='{y + 13}' font-size='11' text-anchor='end'>"
                     f"{escape(name)}</text>")
        if math.isfinite(value):
            parts.append(f"<rect x='{label_w}' y='{y}' width='{max(value, 0) * scale:.1f}' height='16' "
                         f"fill='{colour}' opacity='.8'/>")
            right = label_w + max(high if math.isfinite(high) else value, 0) * scale + 6
            parts.append(f"<text x='{right:.1f}' y='{y + 13}' font-size='11'>{value:.3f}</text>")
        if math.isfinite(low) and math.isfinite(high):
            a, b = label_w + low * scale, label_w + high * scale
            parts.append(f"<line x1='{a:.1f}' x2='{b:.1f}' y1='{y + 8}' y2='{y + 8}' stroke='#111827'/>"
                         f"<line x1='{a:.1f}' x2='{a:.1f}' y1='{y + 3}' y2='{y + 13}' stroke='#111827'/>"
                         f"<line x1='{b:.1f}' x2='{b:.1f}' y1='{y + 3}' y2='{y + 13}' stroke='#111827'/>")
    note = "lower is better" if lower_is_better else "higher is better"
    parts.append(f"<text x='{label_w}' y='{height - 2}' font-size='10' fill='#6b7280'>{note}; "
                 f"whiskers: bootstrap interval</text></svg>")
    return "".join(parts)


def _curves(metrics: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    def points(kind: str) -> list[tuple[float, float]]:
        return [(float(r["step"]), float(r["loss"])) for r in metrics
                if r.get("type") == kind and "loss" in r]

    train, valid = points("train"), points("eval")
    return {name: values for name, values in (("train", train), ("validation", valid)) if values}


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(rows_cell for rows_cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _source(source: str) -> str:
    """file.jsonl:LINE for the tables (report.json keeps the full path)."""
    path, _, line = source.rpartition(":")
    return f"{path.rsplit('/', 1)[-1]}:{line}" if path else source


def _td(value: Any, numeric: bool = False) -> str:
    if numeric:
        return f"<td class='n'>{_num(value)}</td>"
    return f"<td><pre>{escape(str(value if value is not None else ''))}</pre></td>"


def render_html(report: dict[str, Any], metrics: list[dict[str, Any]]) -> str:
    summary = report.get("summary", {})
    status = summary.get("status", "amber")
    out = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>tunesmith report: "
           f"{escape(str(report.get('model')))}</title><style>{CSS}</style></head><body>",
           f"<h1>Evaluation of {escape(str(report.get('model')))}</h1>",
           f"<p><span class='status' style='background:{STATUS.get(status, '#374151')}'>"
           f"{escape(status.replace('_', ' '))}</span> "
           f"base model <b>{escape(str(report.get('base_model')))}</b>, {report.get('examples')} held-out "
           f"examples from {escape(str(report.get('data')))}</p>",
           "<ul>" + "".join(f"<li>{escape(line)}</li>" for line in summary.get("lines", [])) + "</ul>"]

    out.append("<h2>Training</h2>" + line_chart(_curves(metrics)))

    loss = report.get("loss") or {}
    if loss:
        out.append("<h2>Held-out loss</h2>")
        out.append(interval_bars([(s, v["loss"], v["low"], v["high"]) for s, v in loss.items()],
                                 lower_is_better=True))
        out.append(_table(["system", "loss", "interval", "perplexity", "token accuracy"],
                          [[_td(s), _td(v["loss"], True), _td(f"{_num(v['low'])} – {_num(v['high'])}"),
                            _td(v["perplexity"], True), _td(v["token_accuracy"], True)]
                           for s, v in loss.items()]))
    for name, by_system in (report.get("scores") or {}).items():
        out.append(f"<h2>Grader: {escape(name)}</h2>")
        out.append(interval_bars([(s, v["value"], v["low"], v["high"]) for s, v in by_system.items()]))
        errors = {s: v.get("errors", 0) for s, v in by_system.items() if v.get("errors")}
        if errors:
            out.append("<p class='muted'>grader errors (scored 0): "
                       + escape(", ".join(f"{s} {n}" for s, n in errors.items())) + "</p>")

    comparisons = report.get("comparisons") or []
    if comparisons:
        out.append("<h2>Tuned model against each baseline, example by example</h2>")
        header = ["baseline", "metric", "win", "tie", "loss", "mean difference", "interval", "verdict"]
        out.append(_table(header,
                          [[_td(c["baseline"]), _td(c["metric"]), _td(c["wins"], True), _td(c["ties"], True),
                            _td(c["losses"], True), _td(c["difference"]["value"], True),
                            _td(f"{_num(c['difference']['low'])} – {_num(c['difference']['high'])}"),
                            _td(c["verdict"])] for c in comparisons]))
        out.append("<p class='muted'>difference: tuned minus baseline, signed so that positive is better "
                   "(for loss: baseline minus tuned).</p>")

    forgetting = report.get("forgetting")
    if forgetting:
        colour = STATUS["red" if forgetting["regressed"] else "green"]
        change = forgetting["change"]
        out.append("<h2>Forgetting probe</h2>")
        out.append(f"<p><span class='status' style='background:{colour}'>"
                   f"{'regressed' if forgetting['regressed'] else 'ok'}</span> loss on "
                   f"{escape(str(forgetting['data']))} ({forgetting['examples']} examples) changed by "
                   f"<b>{change['value']:+.1%}</b> (interval {change['low']:+.1%} to {change['high']:+.1%}); "
                   f"the threshold is +{forgetting['threshold']:.0%}.</p>")
        out.append(interval_bars([(s, forgetting[s]["loss"], forgetting[s]["low"], forgetting[s]["high"])
                                  for s in ("base", "tuned")], lower_is_better=True))
        for name, values in (forgetting.get("scores") or {}).items():
            out.append(f"<p>{escape(name)}: base {_num(values['base'])} → tuned {_num(values['tuned'])}"
                       f"{' (regressed)' if values['regressed'] else ''}</p>")

    detail = report.get("examples_detail") or {}
    items = {row["index"]: row for row in detail.get("items", [])}
    for title, key in (("Held-out examples with the largest loss", "worst_by_loss"),
                       ("Held-out examples with the lowest grade", "worst_by_grade")):
        rows = [items[i] for i in detail.get(key, []) if i in items]
        if not rows:
            continue
        out.append(f"<h2>{title}</h2>")
        out.append(_table(["source", "question", "reference", "tuned reply", "loss tuned / base", "scores"],
                          [[_td(_source(r["source"])), _td(r["question"]), _td(r["reference"]),
                            _td((r.get("reply") or {}).get("tuned", "")),
                            _td(f"{_num(r['loss'].get('tuned'))} / {_num(r['loss'].get('base'))}"
                                if r.get("loss") else ""),
                            _td(", ".join(f"{g} {v['tuned']:.2f}" for g, v in (r.get("scores") or {}).items())
                                + "".join(f"\n{g}: {e}" for g, e in (r.get("errors") or {}).items()))]
                           for r in rows]))
    noisy = report.get("noisy_training_examples") or []
    if noisy:
        out.append("<h2>Training examples the tuned model fits worst (check their labels)</h2>")
        out.append(_table(["source", "final loss", "question", "reference"],
                          [[_td(_source(r["source"])), _td(r["loss"], True), _td(r["question"]),
                            _td(r["reference"])] for r in noisy]))
    out.append(f"<p class='muted'>tunesmith report v{report.get('version')}, "
               f"{escape(str(report.get('created')))};"
               f" bootstrap {report.get('settings', {}).get('bootstrap_samples')} samples, seed "
               f"{report.get('settings', {}).get('bootstrap_seed')}.</p></body></html>")
    return "\n".join(out)
