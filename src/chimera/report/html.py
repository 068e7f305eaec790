"""HTML building blocks of the reports: escaping, tables, badges and the self-contained page.

Every text that came from an input file (sample, patient and specimen ids, QC reasons, alert
messages, file names) goes through :func:`esc` before it reaches the page, and the page's
Content-Security-Policy allows no network access at all and runs only the one inline script
whose hash it names, so even a missed escape could neither load nor run anything.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from chimera.report.charts import Chart

_CSS = """
:root { --ink: #1f2933; --muted: #616e7c; --line: #d9e2ec; --pass: #1b7f3b; --review: #b25e09;
  --fail: #b42318; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif;
  color: var(--ink); margin: 0 auto; max-width: 1180px; padding: 16px 24px 48px; }
h1 { font-size: 24px; margin: 8px 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px;
  border-bottom: 1px solid var(--line); padding-bottom: 4px; } h3 { font-size: 15px; }
.meta, .note, figcaption { color: var(--muted); font-size: 12.5px; }
.missing { color: var(--review); font-style: italic; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 12.5px; }
th, td { border: 1px solid var(--line); padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f5f7fa; font-weight: 600; } td.num { text-align: right;
  font-variant-numeric: tabular-nums; }
.badge { display: inline-block; border-radius: 9px; padding: 0 8px; font-size: 11.5px;
  font-weight: 600; color: #fff; } .badge.pass { background: var(--pass); }
.badge.review { background: var(--review); } .badge.fail { background: var(--fail); }
.badge.open, .badge.ongoing { background: var(--fail); } .badge.resolved { background: #7b8794; }
.badge.sig { background: #3e4c59; } .badge.ns { background: #9aa5b1; }
figure.chart { margin: 10px 0 18px; } figure.chart svg { max-width: 100%; height: auto; }
.export button { font-size: 11.5px; margin-right: 4px; cursor: pointer; }
.grid { display: flex; flex-wrap: wrap; gap: 8px; } .grid figure.chart { width: 370px; }
details { margin: 2px 0; } summary { cursor: pointer; }
footer { margin-top: 36px; border-top: 1px solid var(--line); padding-top: 8px;
  font-size: 12px; color: var(--muted); }
code, .sha { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 11.5px; }
@media print { .export { display: none; } details { display: block; } }
"""

_SCRIPT = """
(function () {
  function svgText(id) {
    var svg = document.querySelector('#' + id + ' svg');
    return new XMLSerializer().serializeToString(svg);
  }
  function save(href, name) {
    var a = document.createElement('a');
    a.href = href; a.download = name; document.body.appendChild(a); a.click(); a.remove();
  }
  function exportSvg(id, name) {
    var url = URL.createObjectURL(new Blob([svgText(id)], {type: 'image/svg+xml'}));
    save(url, name + '.svg');
    setTimeout(function () { URL.revokeObjectURL(url); }, 1000);
  }
  function exportPng(id, name) {
    var svg = document.querySelector('#' + id + ' svg');
    var box = svg.viewBox.baseVal, scale = 3, img = new Image();
    img.onload = function () {
      var canvas = document.createElement('canvas');
      canvas.width = box.width * scale; canvas.height = box.height * scale;
      var ctx = canvas.getContext('2d');
      ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, canvas.width, canvas.height);
      ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
      save(canvas.toDataURL('image/png'), name + '.png');
    };
    img.src = 'data:image/svg+xml;charset=utf-8,' + encodeURIComponent(svgText(id));
  }
  document.querySelectorAll('button[data-export]').forEach(function (button) {
    button.addEventListener('click', function () {
      var id = button.dataset.target, name = button.dataset.name;
      if (button.dataset.export === 'png') { exportPng(id, name); } else { exportSvg(id, name); }
    });
  });
})();
"""


def esc(value: object) -> str:
    """Escape any value for HTML text or a quoted attribute; None reads as an en dash.

    Examples
    --------
    >>> esc('<script>"onload=')
    '&lt;script&gt;&quot;onload='
    >>> esc(None)
    '–'
    """
    return "–" if value is None else html.escape(str(value), quote=True)


@dataclass(frozen=True)
class Cell:
    """A table cell: raw HTML (already escaped) and whether it holds a number."""

    markup: str
    numeric: bool = False


def text(value: object) -> Cell:
    """A cell showing ``value`` escaped."""
    return Cell(esc(value))


def number(value: float | None, digits: int = 3) -> Cell:
    """A right-aligned number with ``digits`` significant digits; missing reads as an en dash."""
    return Cell("–" if value is None else f"{value:.{digits}g}", numeric=True)


def table(headers: Sequence[str], rows: Iterable[Sequence[Cell]], *, css: str = "") -> str:
    """An HTML table; ``headers`` are our own words, every cell is already escaped."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='num'>{c.markup}</td>" if c.numeric else f"<td>{c.markup}</td>" for c in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table class='{esc(css)}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def badge(label: str, kind: str, title: str | None = None) -> str:
    """A coloured badge (``kind`` is a CSS class of ours; ``title`` a hover text)."""
    hover = f" title='{esc(title)}'" if title else ""
    return f"<span class='badge {esc(kind)}'{hover}>{esc(label)}</span>"


def missing(message: str) -> str:
    """A visible note that data is missing (never hidden)."""
    return f"<p class='missing'>{esc(message)}</p>"


def figure(chart: Chart, *, download_name: str) -> str:
    """A chart with its caption and SVG/PNG export buttons."""
    buttons = "".join(
        f"<button type='button' data-export='{kind}' data-target='{esc(chart.key)}' "
        f"data-name='{esc(download_name)}'>Save {kind.upper()}</button>"
        for kind in ("svg", "png")
    )
    return (
        f"<figure class='chart' id='{esc(chart.key)}' data-points='{chart.points}'>"
        f"{chart.svg}<figcaption>{esc(chart.caption)}</figcaption>"
        f"<div class='export'>{buttons}</div></figure>"
    )


def _script_hash(script: str) -> str:
    digest = hashlib.sha256(script.encode("utf-8")).digest()
    return "sha256-" + base64.b64encode(digest).decode("ascii")


def page(title: str, body: str) -> str:
    """A complete, self-contained HTML document (no external resource of any kind)."""
    policy = (
        "default-src 'none'; img-src data: blob:; style-src 'unsafe-inline'; "
        f"script-src '{_script_hash(_SCRIPT)}'; base-uri 'none'; form-action 'none'"
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{policy}\">"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{esc(title)}</title><style>{_CSS}</style></head>\n<body>\n{body}\n"
        f"<script>{_SCRIPT}</script>\n</body></html>\n"
    )
