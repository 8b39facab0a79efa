"""report.json → report.html: one self-contained file a clinical engineer can open offline.

Every number in the page is read from report.json; the only other input is the test images, for
the thumbnails of the cases where the shipped model and the teacher disagree. Plots are PNGs
(matplotlib, Agg) embedded as base64; there is no script and nothing is fetched from a network.
Table cells carry ``data-candidate``/``data-field`` attributes naming the report.json value they
show, so tests (and scripts) can check the page against the report.
"""
from __future__ import annotations

import base64
import io
import json
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from .._io import write_text_atomic
from . import plots
from .writer import _fmt, _millions, _size

THUMB_PX = 96
CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px auto;max-width:1280px;color:#222;padding:0 16px}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.15em;border-bottom:1px solid #ddd;padding-bottom:3px;margin-top:1.8em}
table{border-collapse:collapse;font-size:.76em;margin:.5em 0} th,td{border:1px solid #ddd;padding:2px 5px}
th{background:#f4f4f4;text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.scroll{overflow-x:auto}
tr.shipped td{background:#fdecea;font-weight:600} tr.baseline td{color:#666}
.banner{padding:10px 14px;border-radius:6px;margin:10px 0} .ok{background:#e8f5e9;border:1px solid #a5d6a7}
.no{background:#fdecea;border:1px solid #ef9a9a} figure{margin:14px 0} figcaption{font-size:.8em;color:#555;max-width:900px}
img.plot{max-width:100%;border:1px solid #eee} .cases{display:flex;flex-wrap:wrap;gap:10px}
.case{border:1px solid #ddd;border-radius:4px;padding:4px;font-size:.72em;width:112px;text-align:center}
.case img{width:96px;height:96px;image-rendering:pixelated;display:block;margin:0 auto 3px} .muted{color:#777}
"""


def _cell(value: str, name: str | None = None, field: str | None = None, cls: str = "num") -> str:
    attrs = f' class="{cls}"' if cls else ""
    if name is not None and field is not None:
        attrs += f' data-candidate="{escape(name)}" data-field="{escape(field)}"'
    return f"<td{attrs}>{escape(value)}</td>"


def _table(header: list[str] | None, rows: list[str], attrs: str = "") -> str:
    head = "" if header is None else "<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr></thead>"
    return f"<div class='scroll'><table{attrs}>{head}<tbody>{''.join(rows)}</tbody></table></div>"


def candidates_table(report: dict) -> str:
    """One row per candidate; each figure cell names the report.json field it shows."""
    agree = report.get("clinical", {}).get("teacher_agreement", {})
    front = set(report.get("clinical", {}).get("pareto_front", []))
    rows = []
    for c in report["candidates"]:
        n, m, lat = c["name"], c.get("metrics") or {}, c.get("latency_ms") or {}
        ci = m.get("auc_ci")
        cls = "shipped" if n == report.get("shipped") else ("baseline" if c["role"] == "baseline" else "")
        label = n + (" ✔ shipped" if cls == "shipped" else "") + (" ◆" if n in front else "")
        rows.append(f'<tr class="{cls}">' + "".join([
            _cell(label, cls=""), _cell(c["backend"], cls=""), _cell(c["precision"], cls=""),
            _cell(_fmt(m.get("auc"), ".4f"), n, "metrics.auc"),
            _cell("—" if not ci else f"{ci[0]:.4f}–{ci[1]:.4f}", n, "metrics.auc_ci"),
            _cell(_fmt(m.get("sensitivity"), ".4f"), n, "metrics.sensitivity"),
            _cell(_fmt(m.get("specificity"), ".4f"), n, "metrics.specificity"),
            _cell(_fmt(m.get("accuracy"), ".4f"), n, "metrics.accuracy"),
            _cell(_fmt(m.get("threshold"), ".4f"), n, "metrics.threshold"),
            _cell(_fmt(m.get("ece"), ".4f"), n, "metrics.ece"),
            _cell(_fmt(agree.get(n), ".4f"), n, "clinical.teacher_agreement"),
            _cell(_fmt(lat.get("p50"), ".3f"), n, "latency_ms.p50"),
            _cell(_fmt(lat.get("p99"), ".3f"), n, "latency_ms.p99"),
            _cell(_size(c.get("size_bytes")), n, "size_bytes"),
            _cell(_millions(c.get("params")), n, "params"),
            _cell(_millions(c.get("macs")), n, "macs"),
        ]) + "</tr>")
    header = ["candidate", "backend", "precision", "AUC", "AUC 95 % CI", "sensitivity", "specificity", "accuracy",
              "threshold", "ECE", "agrees with teacher", "p50 ms", "p99 ms", "size", "params", "MACs"]
    return _table(header, rows, ' id="candidates"')


def shipping_banner(report: dict) -> str:
    ship = report["shipping"]
    budget = (f"budget: Dice drop ≤ {ship.get('max_dice_drop')}" if report.get("task") == "segmentation" else
              f"budgets: AUC drop ≤ {ship.get('max_auc_drop')}"
              + (f", sensitivity drop ≤ {ship['max_sensitivity_drop']}" if ship.get("max_sensitivity_drop") is not None
                 else "") + f" ({', '.join(f'{k}: {v}' for k, v in (ship.get('budget_source') or {}).items())})")
    rejected = ship.get("rejected_for_sensitivity") or []
    extra = (f"<br>inside the AUC budget but rejected for sensitivity: {escape(', '.join(rejected))}" if rejected else "")
    extra += _paired_line(ship)
    if report.get("shipped"):
        return (f'<div class="banner ok" id="shipped"><b>Shipped: <code>{escape(report["shipped"])}</code></b> — '
                f'{escape(ship["reason"])}<br><span class="muted">{escape(ship["rule"])}; {escape(budget)}</span>{extra}</div>')
    return (f'<div class="banner no" id="shipped"><b>Nothing shipped</b> — {escape(ship["reason"])}'
            f'<br><span class="muted">{escape(ship["rule"])}; {escape(budget)}</span>{extra}</div>')


def _paired_line(ship: dict) -> str:
    """The chosen model's paired comparison with the teacher, as one line of the banner."""
    from .clinical import non_inferiority_text

    v = ship.get("non_inferiority")
    if not v:
        return ""
    if "dice_diff" in v:  # segmentation
        from .segmentation import paired_text

        text = paired_text(v)
    else:
        text = non_inferiority_text(v)
    return f'<br><span id="non-inferiority">{escape(ship["chosen"])}: {escape(text)}</span>'



def clinical_summary(report: dict) -> str:
    cl = report.get("clinical") or {}
    op, bs = cl.get("operating_point") or {}, cl.get("bootstrap") or {}
    items = [
        f"operating point ({escape(str(op.get('setting')))}): {escape(str(op.get('rule')))}; teacher threshold "
        f"{_fmt(op.get('teacher_threshold'), '.4f')}, teacher val sensitivity {_fmt(op.get('teacher_val_sensitivity'), '.4f')}",
        f"AUC confidence interval: {bs.get('method')} bootstrap, {bs.get('resamples')} resamples of the test split "
        f"(seed {bs.get('seed')}), level {bs.get('level')}",
        f"ECE: top-label expected calibration error, {cl.get('ece_bins')} equal-width bins",
        "◆ marks the accuracy/latency Pareto front (no other candidate is both faster and more accurate)",
    ]
    from .clinical import non_inferiority_text

    items += [f"<code>{escape(name)}</code>: {escape(non_inferiority_text(v))} (paired bootstrap of the test cases)"
              for name, v in (cl.get("vs_teacher") or {}).items()]
    return "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def waterfall_table(report: dict) -> str:
    names = report.get("clinical", {}).get("waterfall", [])
    rows = []
    for title, values in plots.waterfall_values(report):
        cells = "".join(_cell("—" if v is None else f"{v:.4g}") for v in values)
        rows.append(f"<tr><th>{escape(title)}</th>{cells}</tr>")
    return _table(["", *names], rows, ' id="waterfall"')


def thumbnail(image: np.ndarray, mean: list[float], std: list[float], px: int = THUMB_PX) -> str:
    """A preprocessed C×H×W test image back in pixels (x·std + mean), as a base64 PNG."""
    from PIL import Image

    c = image.shape[0]
    m = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
    pixels = np.clip((image * s + m) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels[0]) if c == 1 else Image.fromarray(np.moveaxis(pixels[:3], 0, -1))
    buf = io.BytesIO()
    img.resize((px, px), Image.NEAREST).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def disagreement_section(report: dict, test_images: np.ndarray | None) -> str:
    dis = (report.get("clinical") or {}).get("disagreements")
    if not dis:
        return "<p class='muted'>No shipped model: no disagreement list.</p>"
    names = report["dataset"].get("class_names") or []
    label = lambda k: names[k] if 0 <= k < len(names) else str(k)  # noqa: E731
    pre = report["preprocessing"]
    head = (f"<p id='agreement'>The shipped model <code>{escape(dis['model'])}</code> and the teacher "
            f"<code>{escape(dis['teacher'])}</code> agree on <b>{dis['agreement']:.4f}</b> of {dis['n']} test cases; "
            f"they disagree on <b>{dis['disagreements_total']}</b>"
            + (f" (the {len(dis['cases'])} with the largest probability gap shown)" if len(dis["cases"]) < dis["disagreements_total"] else "")
            + ". Probabilities: " + ("P(" + escape(label(1)) + ")" if len(names) == 2 else "of the predicted class")
            + ", each model at its own operating point.</p>")
    if test_images is None:
        head += "<p class='muted'>Test images not available: regenerate with the data to see thumbnails.</p>"
    cards = []
    for case in dis["cases"]:
        i = case["index"]
        img = (f'<img alt="test case {i}" src="data:image/png;base64,{thumbnail(test_images[i], pre["mean"], pre["std"])}">'
               if test_images is not None and i < len(test_images) else "")
        cards.append(f'<div class="case" data-index="{i}">{img}#{i} · true <b>{escape(label(case["label"]))}</b><br>'
                     f'teacher {escape(label(case["teacher_pred"]))} ({case["teacher_prob"]:.3f})<br>'
                     f'model {escape(label(case["model_pred"]))} ({case["model_prob"]:.3f})</div>')
    return head + f'<div class="cases">{"".join(cards)}</div>'


def per_class_section(report: dict) -> str:
    shipped = next((c for c in report["candidates"] if c["name"] == report.get("shipped")), None)
    pc = ((shipped or {}).get("metrics") or {}).get("per_class")
    if not pc:
        return ""
    names = report["dataset"].get("class_names") or []
    rows = [f"<tr><td>{escape(names[p['class']] if p['class'] < len(names) else str(p['class']))}</td>"
            + "".join(_cell(_fmt(p[k], ".4f") if k != "n" else str(p[k])) for k in ("n", "auc", "sensitivity", "specificity"))
            + "</tr>" for p in pc]
    return "<h2>Per class (shipped model, one-vs-rest, argmax decision)</h2>" + _table(
        ["class", "test cases", "AUC", "sensitivity", "specificity"], rows, ' id="per-class"')


def robustness_html(report: dict) -> str:
    """The robustness table and plot (every figure from report.json "robustness"); empty when not evaluated."""
    from .robustness import RULE, table_rows

    sec = report.get("robustness")
    if not sec:
        return ""
    teacher, shown, metric = sec["teacher"], sec.get("shown"), sec["metric"].upper()
    rows = []
    for name, sev, par, t, s in table_rows(sec):  # report.json robustness.candidates[..]["test"]: clean, scores[i]
        rows.append("<tr>" + _cell(name, cls="") + _cell(sev) + _cell(par, cls="")
                    + _cell(_fmt(t and t["metric"], ".4f")) + _cell(_fmt(t and t["drop"], "+.4f"))
                    + _cell(_fmt(s and s["metric"], ".4f")) + _cell(_fmt(s and s["drop"], "+.4f")) + "</tr>")
    means = [f"<li><code>{escape(n)}</code>: mean drop "
             + (f"val {_fmt(r['val'].get('mean_drop'), '+.4f')}, " if r.get("val") else "")
             + f"test {_fmt((r.get('test') or {}).get('mean_drop'), '+.4f')}</li>" for n, r in sec["candidates"].items()]
    desc = "".join(f"<li><code>{escape(s['name'])}@{s['severity']}</code>: {escape(s['description'])}</li>"
                   for s in sec["shifts"])
    return ("<h2>Robustness under acquisition shift (test)</h2>"
            f"<p class='muted'>{escape(RULE)}; {sec['images'].get('test')} of {sec['available'].get('test')} test images, "
            f"seed {sec['seed']}, {sec['seconds']:.1f} s; max_robust_drop {escape(str(sec.get('max_robust_drop')))}</p>"
            + _table(["shift", "severity", "parameter", f"teacher {metric}", "drop", f"{shown or '—'} {metric}", "drop"],
                     rows, ' id="robustness"')
            + f"<ul>{''.join(means)}</ul>"
            + _figure(plots.fig_robustness(report), "fig-robustness",
                      f"Test {metric} against severity (0: clean) per shift; grey: teacher {teacher}, red: {shown}.")
            + f"<details><summary>Shifts, exactly</summary><ul>{desc}</ul></details>")


def search_html(report: dict) -> str:
    """The searched configurations as a table and latency vs val metric as a plot (from report.json "search")."""
    from ..search import SearchResult
    from .search import fig_search, spent_line, table_rows

    sec = report.get("search")
    if not sec:
        return ""
    result = SearchResult.from_dict(sec)
    header, *rows = table_rows(result)
    body = ["<tr>" + "".join(_cell(v, cls="" if i in (1, 5, 6, 12, 13) else "num") for i, v in enumerate(r)) + "</tr>"
            for r in rows]
    spent = spent_line(result)
    predicted = ("<p><strong>Latencies are predicted, not measured:</strong> "
                 + escape((result.latency_model or {}).get("text", "")) + "</p>") if result.latency_kind == "predicted" else ""
    return ("<h2>Search: the configurations tried</h2>"
            f"<p class='muted'>{escape(spent)}. Val figures only (the test split confirms the shipped model once).</p>"
            f"<p>{escape(result.reason)}.</p>" + predicted
            + _table(header, body, ' id="search"')
            + _figure(fig_search(result), "fig-search",
                      "Val metric against batch-1 latency for every configuration; the Pareto front joined; the "
                      "shipped configuration starred."))


def machine_section(report: dict) -> str:
    mach, teacher, ds = report["machine"], report["teacher"], report["dataset"]
    rows = [("CPU", f"{mach['cpu']} ({', '.join(mach['isa']) or 'no SIMD flags read'})"),
            ("threads / logical cores", f"{mach['threads']} / {mach.get('logical_cores')}"),
            ("OS, arch, Python", f"{mach['os']}, {mach.get('arch')}, Python {mach['python']}"),
            *[(k, v) for k, v in mach["runtimes"].items()],
            ("edgekd", f"{report['edgekd_version']} (report schema {report['schema_version']}, seed {report['seed']})"),
            ("teacher", f"{teacher['spec']} ({teacher['format']}, sha256 {teacher['sha256']})"),
            ("data", f"{ds['path']} ({ds['format']}{', SYNTHETIC' if ds.get('synthetic') else ''}; splits {ds['splits']}; "
                     f"sha256 {ds['sha256']})")]
    return _table(None, [f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>" for k, v in rows],
                  ' id="machine"')


def _figure(fig: Any, fig_id: str, caption: str) -> str:
    return (f'<figure id="{fig_id}"><img class="plot" alt="{escape(caption)}" '
            f'src="data:image/png;base64,{plots.png_base64(fig)}"><figcaption>{escape(caption)}</figcaption></figure>')


def figures(report: dict) -> str:
    shipped = next((c for c in report["candidates"] if c["name"] == report.get("shipped")), None)
    ship_txt = (f"shipped {shipped['name']}: p50 {shipped['latency_ms']['p50']:.3f} ms, AUC {shipped['metrics']['auc']:.4f}"
                if shipped and shipped.get("latency_ms") else "shipped model not timed on the host")
    roc = (report.get("clinical") or {}).get("roc", {})
    roc_txt = "; ".join(f"{role} {c['candidate']} AUC {c['auc']:.4f}" for role, c in roc.items())
    return "".join([
        "<h2>Accuracy vs latency</h2>",
        _figure(plots.fig_accuracy_latency(report), "fig-pareto",
                f"Test AUC (bars: 95 % CI) against batch-1 p50 latency; dashed: Pareto front "
                f"({', '.join(report.get('clinical', {}).get('pareto_front', []))}); star: {ship_txt}."),
        "<h2>ROC curves (test)</h2>",
        _figure(plots.fig_roc(report), "fig-roc", f"Dots: each model's operating point chosen on val. {roc_txt}."),
        "<h2>Stage by stage</h2>",
        _figure(plots.fig_waterfall(report), "fig-waterfall",
                "From the teacher to the shipped model; n/a: no such figure at that step (simulated INT8 has no "
                "latency or file)."),
        waterfall_table(report),
        "<h2>Size per candidate</h2>",
        _figure(plots.fig_sizes(report), "fig-sizes", "Files on disk (OpenVINO: .xml + .bin); torch: state_dict."),
    ])


def render_html(report: dict, test_images: np.ndarray | None = None, out: Path | None = None) -> str:
    """The whole page. ``test_images``: the preprocessed test split (N×C×H×W) for the thumbnails; ``out``:
    the report's folder (a segmentation report embeds its overlays.png)."""
    tgt = report["target"]
    title = f"edgekd report — {tgt['name']}"
    head = [
        f"<h1>{escape(title)}</h1>",
        f"<p class='muted'>created {escape(report['created'])} · edgekd {escape(report['edgekd_version'])} · "
        f"target {escape(tgt['name'])} ({escape(tgt.get('description') or '')}) · runtime {escape(tgt['runtime'])}</p>",
        shipping_banner(report),
    ]
    if report.get("task") == "segmentation":
        from .segmentation import seg_html

        body = head + [seg_html(report, out), search_html(report), "<h2>Size per candidate</h2>",
                       _figure(plots.fig_sizes(report), "fig-sizes", "Files on disk (OpenVINO: .xml + .bin)."),
                       robustness_html(report), "<h2>Machine and versions</h2>", machine_section(report)]
    else:
        body = head + [
            "<h2>Candidates (test split)</h2>", candidates_table(report), clinical_summary(report),
            figures(report),
            "<h2>Where the shipped model and the teacher disagree</h2>", disagreement_section(report, test_images),
            per_class_section(report),
            robustness_html(report),
            search_html(report),
            "<h2>Machine and versions</h2>", machine_section(report),
        ]
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>{''.join(body)}</body></html>\n")


def write_html(report: dict, out: Path, data: Any | None = None) -> Path:
    """Write ``out/report.html``; ``data`` (an edgekd Dataset) supplies the test images for thumbnails."""
    images = data.test.images.numpy() if data is not None else None
    path = Path(out) / "report.html"
    write_text_atomic(path, render_html(report, images, Path(out)))
    return path


def regenerate_html(report_path: Path, data_path: Path | None = None) -> Path:
    """Rebuild report.html next to ``report_path`` from report.json and (optionally) the dataset.

    The data is loaded with the report's own preprocessing, ``max_samples`` and seed, and must
    have the sha256 the report recorded, so the thumbnails show the very cases listed.
    """
    from ..config import DataOptions, Preprocessing
    from ..data import load_dataset
    from ..errors import InputError

    report = json.loads(Path(report_path).read_text())
    data = None
    if data_path is not None or report["dataset"].get("synthetic"):
        pre, cfg = report["preprocessing"], report["config"]
        data = load_dataset(data_path, Preprocessing(image_size=pre["image_size"], mean=tuple(pre["mean"]),
                                                     std=tuple(pre["std"])),
                            max_samples=cfg.get("max_samples"), seed=cfg["seed"],
                            options=DataOptions.from_dict(cfg.get("data_options")))
        if report["dataset"].get("sha256") and data.sha256 != report["dataset"]["sha256"]:
            raise InputError(f"{data_path} is not the data of {report_path} (sha256 differs): pass the dataset "
                             "the report was made from")
    return write_html(report, Path(report_path).parent, data)
