"""Self-contained HTML: figures embedded (base64 PNG or inline SVG), no external resource.

The page opens offline from disk; the only links are relative ``<a href>`` links to files next to
it (metrics.csv, the SVG files), which the browser does not fetch when the page loads.
"""

from __future__ import annotations

import base64
import html
import os
import platform
import re
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from ncmse.collapse.result import METRIC_NAMES
from ncmse.errors import InputError
from ncmse.report.style import METRIC_LABELS, FigureFile
from ncmse.rundir.format import parse_cell
from ncmse.rundir.numfmt import sig3

__all__ = [
    "config_section",
    "environment_section",
    "final_metrics_section",
    "EMBED_MODES",
    "check_embed",
    "FINAL_METRICS",
    "current_environment",
    "figure_html",
    "format_value",
    "page",
    "relative_link",
    "table",
]

EMBED_MODES = ("png", "svg")

#: Rows of the final-metrics table: the SPEC names of :data:`ncmse.collapse.result.METRIC_NAMES`,
#: with
#: ``snr`` (expanded to snr_1..snr_{C-1}) after the geometry metrics, and the training criterion
#: ``objective`` (SPEC §2) before the SPEC loss.
FINAL_METRICS: tuple[str, ...] = (
    "epoch",
    "train_error",
    "objective",
    *METRIC_NAMES[: METRIC_NAMES.index("nc4") + 1],
    "snr",
    *METRIC_NAMES[METRIC_NAMES.index("nc4") + 1 :],
)

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #1a1a1a; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 1.5em; font-size: .92em; }
.table-wrap { max-width: 100%; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1.5em 0; } figure img, figure svg { max-width: 100%; height: auto;
         box-sizing: border-box;
         display: block; border: 1px solid #eee; }
figcaption { font-size: .92em; color: #333; margin-top: .3em; }
pre { background: #f7f7f7; padding: .8em; overflow-x: auto; font-size: .88em; }
.note { color: #555; font-style: italic; }
.verdict { font-weight: 600; white-space: nowrap; } .verdict.ok { color: #007a55; }
.verdict.bad { color: #b34700; } .verdict.na { color: #666; font-weight: normal; }
.verdict.unsure { color: #6b4f00; background: #fff3c4; padding: 0 .25em; }
.verdict.bad { background: #fde8dc; padding: 0 .25em; }
.verdicts-lead { font-size: 1.05em; }
section.summary { display: grid; grid-template-columns: minmax(0, 4fr) minmax(14em, 1fr);
                  gap: 1em; align-items: start; }
@media (max-width: 900px) { section.summary { grid-template-columns: minmax(0, 1fr); } }
.summary-figure figure { margin-top: 0; }
aside.summary-verdicts { font-size: .92em; overflow-wrap: anywhere; }
aside.summary-verdicts h3 { margin: 0 0 .3em; font-size: 1.05em; }
ul.claim-list { list-style: none; padding-left: 0; margin: .3em 0 .8em; }
ul.claim-list li { margin: .15em 0; }
"""


def page(title: str, body: str) -> str:
    """A complete HTML document with inline CSS and no external resource.

    The empty data-URI icon stops the browser from requesting ``favicon.ico``.
    """
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<link rel="icon" href="data:,">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"{body}\n</body>\n</html>\n"
    )


def format_value(value: Any) -> str:
    """A table cell: floats with 3 significant digits (:func:`ncmse.rundir.numfmt.sig3`),
    booleans as yes/no, None as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:  # NaN
            return "—"
        if value.is_integer() and abs(value) < 1e6:
            return str(int(value))
        return sig3(value)
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, raw: bool = False) -> str:
    """An HTML table in a box that scrolls sideways when the table is wider than the page;
    cells are escaped unless ``raw`` (already HTML). A header may break after each underscore
    (``nc1_falls_after_tpt``), so identifiers as headers do not widen the table."""
    head = "".join(f"<th>{html.escape(h).replace('_', '_<wbr>')}</th>" for h in headers)
    lines = [f'<div class="table-wrap"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>']
    for row in rows:
        cells = []
        for cell in row:
            text = cell if raw and isinstance(cell, str) else html.escape(format_value(cell))
            numeric = isinstance(cell, (int, float)) and not isinstance(cell, bool)
            css = ' class="num"' if numeric else ""
            cells.append(f"<td{css}>{text}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</tbody>\n</table></div>")
    return "\n".join(lines)


def relative_link(target: Path, base_dir: Path, text: str | None = None) -> str:
    """An ``<a>`` to ``target`` relative to ``base_dir`` (the folder of the HTML file)."""
    href = Path(os.path.relpath(Path(target).resolve(), Path(base_dir).resolve())).as_posix()
    label = html.escape(text if text is not None else href)
    return f'<a href="{html.escape(href, quote=True)}">{label}</a>'


def check_embed(embed: str) -> None:
    """Raise :class:`InputError` unless ``embed`` is one of :data:`EMBED_MODES`."""
    if embed not in EMBED_MODES:
        raise InputError(f"embed={embed!r} is not supported; use one of {EMBED_MODES}")


def figure_html(fig: FigureFile, base_dir: Path, embed: str = "png") -> str:
    """A ``<figure>`` with the image embedded, a caption and links to the files on disk.

    Parameters
    ----------
    fig : FigureFile
        The figure.
    base_dir : Path
        Folder of the HTML file (for the relative links).
    embed : {"png", "svg"}
        ``"png"``: base64 ``<img>``; ``"svg"``: inline ``<svg>``. Falls back to the format that
        exists when the preferred one was not written.
    """
    check_embed(embed)
    use_svg = (embed == "svg" and fig.svg is not None) or fig.png is None
    if use_svg and fig.svg is not None:
        graphic = _inline_svg(fig.svg.read_text(encoding="utf-8"), prefix=f"{fig.name}-")
    elif fig.png is not None:
        data = base64.b64encode(fig.png.read_bytes()).decode("ascii")
        alt = html.escape(fig.title, quote=True)
        graphic = f'<img src="data:image/png;base64,{data}" alt="{alt}">'
    else:
        raise InputError(f"figure {fig.name!r} has neither a PNG nor an SVG file to embed")
    links = " · ".join(
        relative_link(p, base_dir, p.suffix[1:].upper()) for p in (fig.png, fig.pdf, fig.svg) if p
    )
    return (
        f'<figure id="fig-{html.escape(fig.name, quote=True)}">\n{graphic}\n'
        f"<figcaption><strong>{html.escape(fig.title)}.</strong> {html.escape(fig.caption)} "
        f'<span class="note">Files: {links}</span></figcaption>\n</figure>'
    )


_SVG_ID = re.compile(r'\bid="([^"]+)"')
_SVG_REF = re.compile(r'(href="#|url\(#)([^")]+)')


def _inline_svg(text: str, *, prefix: str) -> str:
    """The ``<svg>`` element of an SVG file, ids prefixed so several can share one page."""
    start = text.find("<svg")
    if start < 0:
        raise InputError("an SVG figure file has no <svg> element; redraw the figures")
    body = text[start:]
    body = _SVG_ID.sub(lambda m: f'id="{prefix}{m.group(1)}"', body)
    return _SVG_REF.sub(lambda m: f"{m.group(1)}{prefix}{m.group(2)}", body)


def current_environment() -> dict[str, str]:
    """Package versions and device of the machine drawing the report.

    Versions come from the installed distributions' metadata, so torch is imported only to name
    the device.
    """
    env = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("torch", "numpy", "ncmse", "matplotlib"):
        try:
            env[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            env[package] = "not installed"
    env["device"] = _current_device()
    return env


def _current_device() -> str:
    try:
        import torch  # lazy: importing ncmse.report loads no torch
    except ImportError:
        return "cpu (torch not installed)"
    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}"
    return "cpu"


def environment_section(summary: Mapping[str, Any]) -> str:
    """The environment table: summary.json ``environment`` if present, else this machine."""
    recorded = summary.get("environment")
    if isinstance(recorded, Mapping) and recorded:
        env, source = dict(recorded), "recorded in summary.json by the run"
    else:
        env, source = current_environment(), "no record in summary.json: this machine, now"
    rows = [(k, _plain(v)) for k, v in env.items()]
    return f'<h2>Environment</h2>\n<p class="note">Source: {source}.</p>\n' + table(
        ("item", "value"), rows
    )


def config_section(config: Mapping[str, Any]) -> str:
    """The resolved configuration, as YAML in a ``<pre>`` block."""
    if not config:
        return '<h2>Configuration</h2>\n<p class="note">No config.yaml in the run directory.</p>'
    text = yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=False)
    return f"<h2>Configuration</h2>\n<pre>{html.escape(text)}</pre>"


def final_metrics_section(final: Mapping[str, Any]) -> str:
    """Final-metrics table: SPEC names, definition, train value and test value."""
    if not final:
        return '<h2>Final metrics</h2>\n<p class="note">No measurement yet.</p>'
    rows = []
    for name in FINAL_METRICS:
        train, test = _metric_value(final, name), _metric_value(final, f"test_{name}")
        if train is None and test is None:
            continue
        rows.append((name, METRIC_LABELS.get(name, ""), train, test))
    has_test = any(r[3] is not None for r in rows)
    headers = ["SPEC name", "definition", "train"] + (["test"] if has_test else [])
    body = table(headers, [r if has_test else r[:3] for r in rows])
    return "<h2>Final metrics</h2>\n" + _identity_note(final) + body


def _metric_value(final: Mapping[str, Any], name: str) -> Any:
    if name in final:
        value = final[name]
        return None if isinstance(value, float) and value != value else value
    base = name + "_"
    js = sorted(
        int(k[len(base) :]) for k in final if k.startswith(base) and k[len(base) :].isdigit()
    )
    if name.endswith("snr") and js:
        return ", ".join(format_value(parse_cell(final[f"{base}{j}"])) for j in js)
    return None


def _identity_note(final: Mapping[str, Any]) -> str:
    """SPEC §7 claim 1: the relative residual of L = L_NC1 + L_NC2/3 + L_⊥ at the last row."""
    try:
        loss = float(final["loss"])
        parts = float(final["loss_nc1"]) + float(final["loss_nc23"]) + float(final["loss_perp"])
    except (KeyError, TypeError, ValueError):
        return ""
    if not loss == loss or loss == 0.0:
        return ""
    residual = abs(loss - parts) / abs(loss)
    return (
        "<p>Decomposition identity at the last measurement: |L − (L_NC1 + L_NC2/3 + L_⊥)| / L = "
        f"{residual:.2e} (SPEC §7: ≤ 1e-10 in float64; values read from the metrics file).</p>\n"
    )


def _plain(value: Any) -> str:
    if isinstance(value, (Mapping, list, tuple)):
        return yaml.safe_dump(value, default_flow_style=True).strip()
    return format_value(value)
