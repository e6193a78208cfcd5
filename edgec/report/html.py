"""Small HTML building blocks: escaped text, tables, figures and the page shell with its inline stylesheet.

Pages are static and self-contained: no scripts, no external fonts or style sheets, images as ``data:`` URIs.
"""

from __future__ import annotations

import html
import json
import math

__all__ = ["esc", "figure", "fmt", "generic", "ms", "page", "section", "table"]

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
h3 { margin-bottom: 0.3em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
table.small { font-size: 0.78em; } .scroll { overflow-x: auto; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
td code { overflow-wrap: anywhere; } td { max-width: 22em; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.bad td { background: #fde8e8; } tr.good td { background: #e8f6e8; } tr.error td { background: #fff4e0; }
.badge { display: inline-block; padding: 0 6px; border-radius: 3px; font-size: 0.8em; font-weight: 600; }
.badge.regression, .badge.error { background: #c62828; color: #fff; }
.badge.improvement, .badge.ok { background: #2e7d32; color: #fff; }
.badge.noise { background: #ddd; color: #333; } .badge.estimated { background: #ff9800; color: #000; }
.estimated { font-style: italic; color: #8a5300; }
.meta { color: #666; font-size: 0.9em; } code { font-size: 0.9em; }
figure { margin: 0.5em 0 1.5em; } figure img { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: 0.85em; }
dl.kv { display: grid; grid-template-columns: max-content auto; gap: 2px 12px; font-size: 0.9em; }
dl.kv dt { font-weight: 600; } dl.kv dd { margin: 0; }
details { margin: 0.3em 0; } summary { cursor: pointer; } td ul { margin: 0; padding-left: 1.2em; }
nav ul { columns: 2; font-size: 0.9em; }
"""


def esc(value) -> str:
    """HTML-escaped text; control characters (from device strings) shown as escapes."""
    from edgec.device_agent.text import terminal_safe

    return html.escape("" if value is None else terminal_safe(value, keep_newlines=True), quote=True)


def fmt(value, spec: str = ".3f", unit: str = "") -> str:
    """A number for a table cell ("-" when missing)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return esc(value)
    return f"{value:{spec}}{unit}"


def ms(value) -> str:
    """A latency in ms with four significant digits (sub-millisecond models keep their precision)."""
    return fmt(value, ".4g")


def table(headers: list[str], rows: list[list], row_classes: list[str] | None = None,
          numeric: set[int] | None = None, css: str = "") -> str:
    """A table; cells are already-escaped HTML. ``numeric``: column indices aligned right."""
    numeric = numeric or set()
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for k, row in enumerate(rows):
        cls = f' class="{row_classes[k]}"' if row_classes and row_classes[k] else ""
        cells = "".join(f'<td class="num">{c}</td>' if j in numeric else f"<td>{c}</td>" for j, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    cls = f' class="{css}"' if css else ""
    return (f'<div class="scroll"><table{cls}><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def figure(uri: str, alt: str, caption: str = "") -> str:
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{uri}" alt="{esc(alt)}">{cap}</figure>'


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{body}</section>'


def page(title: str, subtitle: str, sections: list[tuple[str, str, str]]) -> str:
    """The whole document: title, a table of contents, and ``(anchor, heading, html)`` sections."""
    toc = "".join(f'<li><a href="#{esc(a)}">{esc(t)}</a></li>' for a, t, _ in sections)
    body = "".join(section(a, t, b) for a, t, b in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
            f'<h1>{esc(title)}</h1><p class="meta">{subtitle}</p><nav><ul>{toc}</ul></nav>{body}</body></html>\n')


def generic(value, depth: int = 0) -> str:
    """Any JSON value as HTML: lists of records become tables, mappings definition lists, the rest text.

    Used for report sections this edgec does not know (new compile-report keys still show).
    """
    if isinstance(value, dict):
        if not value:
            return "<em>empty</em>"
        if all(isinstance(v, dict) for v in value.values()) and _flat_records(list(value.values())):
            keys = _columns(list(value.values()))
            rows = [[esc(k)] + [_cell(v.get(c)) for c in keys] for k, v in value.items()]
            return table(["", *keys], rows)
        items = "".join(f"<dt>{esc(k)}</dt><dd>{generic(v, depth + 1)}</dd>" for k, v in value.items())
        return f'<dl class="kv">{items}</dl>'
    if isinstance(value, list):
        if not value:
            return "<em>none</em>"
        records = [_flatten(v) for v in value] if all(isinstance(v, dict) for v in value) else None
        if records is not None and _flat_records(records):
            keys = _columns(records)
            return table(keys, [[_cell(v.get(c)) for c in keys] for v in records])
        if all(not isinstance(v, (dict, list)) for v in value):
            return "<ul>" + "".join(f"<li>{_cell(v)}</li>" for v in value) + "</ul>"
        return "<ol>" + "".join(f"<li>{generic(v, depth + 1)}</li>" for v in value) + "</ol>"
    return _cell(value)


def _flatten(record: dict) -> dict:
    """One level of nesting folded into dotted column names ({"sensitivity": {"drop": 0}} -> sensitivity.drop)."""
    out = {}
    for key, value in record.items():
        if isinstance(value, dict) and value and all(not isinstance(v, (dict, list)) for v in value.values()):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def _flat_records(records: list[dict]) -> bool:
    """Records whose values are scalars or short scalar lists: they read well as table rows."""
    return all(not isinstance(v, (dict, list)) or (isinstance(v, list) and len(v) <= 8
                                                   and all(not isinstance(x, (dict, list)) for x in v))
               for r in records for v in r.values())


def _columns(records: list[dict]) -> list[str]:
    keys: list[str] = []
    for record in records:
        keys.extend(k for k in record if k not in keys)
    return keys


def _cell(value) -> str:
    if isinstance(value, float):
        return fmt(value, ".4g")
    if isinstance(value, (list, dict)):
        return esc(json.dumps(value, sort_keys=True))
    return esc(value)
