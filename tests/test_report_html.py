"""report.html from a real (tiny) compress run: self-contained, rendered by a real headless Chromium,
and every figure it shows taken from report.json; report.md carries the same numbers.

Chromium comes from Debian's package (`apt-get install -y chromium`); without it the browser test
fails with that hint, unless EDGEKD_SKIP_BROWSER=1 is set (then it is skipped).
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.report import plots
from edgekd.report.html import regenerate_html, render_html

# small and quick, but every stage: distill, prune, INT8 PTQ, lower fp32 and INT8
ARGS = ["--target", "generic-cpu", "--max-auc-drop", "1.0", "--max-sensitivity-drop", "1.0", "--max-samples", "160",
        "--max-steps", "8", "--prune-ratio", "0.3", "--prune-steps", "1", "--recovery-steps", "2", "--qat-steps", "0",
        "--iterations", "10", "--quiet"]


@pytest.fixture(scope="module")
def run(data_and_teacher, tmp_path_factory) -> tuple[Path, dict]:
    npz, teacher = data_and_teacher
    out = tmp_path_factory.mktemp("html") / "build"
    result = CliRunner().invoke(app, ["compress", "--teacher", str(teacher), "--data", str(npz), "--out", str(out), *ARGS])
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "report.json").read_text())


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("EDGEKD_SKIP_BROWSER") == "1":
            pytest.skip("EDGEKD_SKIP_BROWSER=1: headless-browser check skipped")
        pytest.fail("chromium not found: install it with `apt-get install -y chromium` "
                    "(or set EDGEKD_SKIP_BROWSER=1 to skip the browser check)")
    return path


def headless(html: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp / 'chromium-profile'}", *args, html.resolve().as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


class Cells(HTMLParser):
    """Every <td data-candidate data-field> with its text, and every <img src>."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple[str, str], str] = {}
        self.images: list[str] = []
        self.case_indices: list[int] = []
        self._open: tuple[str, str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "td" and "data-field" in a:
            self._open = (a["data-candidate"], a["data-field"])
            self.cells[self._open] = ""
        if tag == "img":
            self.images.append(a.get("src", ""))
        if tag == "div" and "data-index" in a:
            self.case_indices.append(int(a["data-index"]))

    def handle_data(self, data):
        if self._open is not None:
            self.cells[self._open] += data

    def handle_endtag(self, tag):
        if tag == "td":
            self._open = None


def parse(text: str) -> Cells:
    p = Cells()
    p.feed(text)
    return p


UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "M": 1e6}


def shown_matches(text: str, value, field: str) -> bool:
    """The displayed text is the report.json value, to the precision shown."""
    text = text.strip()
    if value is None:
        return text == "—"
    if field == "metrics.auc_ci":
        lo, hi = (float(x) for x in text.split("–"))
        return abs(lo - value[0]) <= 5e-5 and abs(hi - value[1]) <= 5e-5
    m = re.fullmatch(r"(-?[0-9.]+)(?: (B|KiB|MiB|GiB|M))?", text)
    assert m, f"{field}: cannot read '{text}'"
    number, unit = float(m.group(1)), m.group(2)
    decimals = len(m.group(1).split(".")[1]) if "." in m.group(1) else 0
    scale = UNITS[unit] if unit else 1
    return abs(number * scale - value) <= 0.5 * 10**-decimals * scale + 1e-12


def report_value(report: dict, name: str, field: str):
    c = next(c for c in report["candidates"] if c["name"] == name)
    if field == "clinical.teacher_agreement":
        return report["clinical"]["teacher_agreement"].get(name)
    v = c
    for key in field.split("."):
        v = (v or {}).get(key)
    return v


def check_cells_against_report(cells: dict[tuple[str, str], str], report: dict) -> int:
    names = [c["name"] for c in report["candidates"]]
    assert {n for n, _ in cells} == set(names)
    for (name, field), text in cells.items():
        assert shown_matches(text, report_value(report, name, field), field), (name, field, text)
    return len(cells)


def test_compress_writes_a_self_contained_offline_page(run):
    out, report = run
    html = (out / "report.html").read_text()
    assert "<script" not in html and not re.search(r"(src|href)=\"(https?:)?//", html)  # nothing from a network
    page = parse(html)
    assert len(page.images) >= 4 + len(report["clinical"]["disagreements"]["cases"])  # 4 plots + thumbnails
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    for fig in ("fig-pareto", "fig-roc", "fig-waterfall", "fig-sizes"):
        assert f'id="{fig}"' in html
    assert check_cells_against_report(page.cells, report) == 13 * len(report["candidates"])


def test_the_page_renders_in_headless_chromium_with_report_json_numbers(run, tmp_path):
    out, report = run
    dom = headless(out / "report.html", tmp_path, "--dump-dom").stdout
    page = parse(dom)  # the DOM Chromium built, not our string
    check_cells_against_report(page.cells, report)
    dis = report["clinical"]["disagreements"]
    assert page.case_indices == [c["index"] for c in dis["cases"]]
    text = re.sub(r"<[^>]+>", "", dom)
    assert f"Shipped: {report['shipped']}" in text
    assert f"agree on {dis['agreement']:.4f} of {dis['n']} test cases" in text
    assert f"they disagree on {dis['disagreements_total']}" in text
    assert report["machine"]["cpu"] in text and report["machine"]["runtimes"]["onnxruntime"] in text

    shot = Path(os.environ.get("EDGEKD_SCREENSHOT_DIR", tmp_path)) / "report.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    headless(out / "report.html", tmp_path, f"--screenshot={shot}", "--window-size=1280,4000", "--hide-scrollbars")
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
    assert img.shape == (4000, 1280, 3)
    top = img[:2400]  # banner, table, accuracy/latency and ROC plots
    assert top.std() > 20  # tables and plots, not a blank or error page
    red = (top[..., 0] > 200) & (top[..., 1] < 80) & (top[..., 2] < 80)
    assert red.sum() > 50  # the shipped model's red star and ROC curve were drawn


def test_the_plots_draw_the_report_json_figures(run):
    _, report = run
    fig = plots.fig_roc(report)
    lines = {ln.get_gid(): ln for ln in fig.axes[0].lines if ln.get_gid()}
    for role, curve in report["clinical"]["roc"].items():
        assert list(lines[f"roc:{role}"].get_xdata()) == curve["fpr"]
        assert list(lines[f"roc:{role}"].get_ydata()) == curve["tpr"]
    assert set(report["clinical"]["roc"]) == {"teacher", "student", "shipped"}
    shipped = next(c for c in report["candidates"] if c["name"] == report["shipped"])
    op = lines["op:shipped"]
    assert op.get_xdata()[0] == pytest.approx(1 - shipped["metrics"]["specificity"])
    assert op.get_ydata()[0] == pytest.approx(shipped["metrics"]["sensitivity"])

    fig = plots.fig_accuracy_latency(report)
    lines = {ln.get_gid(): ln for ln in fig.axes[0].lines if ln.get_gid()}
    assert lines["shipped"].get_xdata()[0] == shipped["latency_ms"]["p50"]
    assert lines["shipped"].get_ydata()[0] == shipped["metrics"]["auc"]
    front = sorted((c["latency_ms"]["p50"], c["metrics"]["auc"]) for c in report["candidates"]
                   if c["name"] in report["clinical"]["pareto_front"])
    assert list(zip(lines["pareto"].get_xdata(), lines["pareto"].get_ydata())) == front

    fig = plots.fig_waterfall(report)
    names = report["clinical"]["waterfall"]
    assert names[0] == report["shipping"]["teacher_candidate"] and names[-1] == report["shipped"]
    by = {c["name"]: c for c in report["candidates"]}
    auc_bars = {p.get_gid(): p for p in fig.axes[3].patches}
    last = auc_bars[f"bar:{len(names) - 1}"]
    assert last.get_height() == pytest.approx(by[names[-1]]["metrics"]["auc"])  # shipped total bar


def test_report_md_keeps_the_same_numbers(run):
    out, report = run
    md = (out / "report.md").read_text()
    for c in report["candidates"]:
        lo, hi = c["metrics"]["auc_ci"]
        assert f"| {c['name']} | {c['metrics']['auc']:.4f} | {lo:.4f}–{hi:.4f} | {c['metrics']['sensitivity']:.4f} |" in md
        assert f"{report['clinical']['teacher_agreement'][c['name']]:.4f} |" in md
    dis = report["clinical"]["disagreements"]
    assert f"agree on {dis['agreement']:.4f} of {dis['n']} test cases; they disagree on {dis['disagreements_total']}" in md
    for case in dis["cases"]:
        assert f"| {case['index']} | {case['label']} | {case['teacher_pred']} | {case['teacher_prob']:.3f} |" in md
    assert "| | " + " | ".join(report["clinical"]["waterfall"]) + " |" in md


def test_report_json_schema_3_holds_only_a_bounded_share_of_the_test_outputs(run):
    _, report = run
    assert report["schema_version"] == 3
    ship = report["shipping"]
    assert ship["chosen_on"] == "val" and ship["confirmed"] and ship["chosen"] == report["shipped"]
    assert ship["non_inferiority"] == report["clinical"]["vs_teacher"][report["shipped"]]
    cl = report["clinical"]
    assert cl["operating_point"]["setting"] == "teacher-sensitivity"
    assert cl["bootstrap"] == {"resamples": 1000, "level": 0.95, "method": "percentile", "seed": 0}
    n = report["dataset"]["splits"]["test"]
    assert len(cl["disagreements"]["cases"]) <= 50 and cl["disagreements"]["n"] == n
    for curve in cl["roc"].values():  # the downsampled curve still encloses the model's AUC
        assert len(curve["fpr"]) <= 200
        assert np.trapezoid(curve["tpr"], curve["fpr"]) == pytest.approx(curve["auc"], abs=0.005)
    teacher = report["shipping"]["teacher_candidate"]
    by = {c["name"]: c for c in report["candidates"]}
    assert by[teacher]["metrics"]["operating_point"] == "youden"
    assert by[report["shipped"]]["metrics"]["operating_point"] == "teacher-sensitivity"
    assert by[report["shipped"]]["metrics"]["val_sensitivity"] >= cl["operating_point"]["teacher_val_sensitivity"]
    assert report["shipping"]["budget_source"] == {"max_auc_drop": "option", "max_sensitivity_drop": "option",
                                                   "max_robust_drop": "profile"}


def test_the_page_is_regenerated_from_report_json_and_the_data(run, tmp_path):
    out, report = run
    copy = tmp_path / "again"
    copy.mkdir()
    shutil.copy(out / "report.json", copy / "report.json")
    regenerate_html(copy / "report.json", Path(report["dataset"]["path"]))
    assert (copy / "report.html").read_bytes() == (out / "report.html").read_bytes()
    regenerate_html(copy / "report.json")  # without the data: no thumbnails, the same numbers
    page = parse((copy / "report.html").read_text())
    plots = 4 + (1 if report.get("robustness") else 0)  # accuracy/latency, ROC, waterfall, sizes (+ robustness)
    assert len(page.images) == plots and page.cells == parse((out / "report.html").read_text()).cells


def test_multiclass_reports_show_per_class_figures(run):
    _, report = run
    rep = json.loads(json.dumps(report))
    rep["dataset"]["class_names"] = ["normal", "bacterial", "viral"]
    shipped = next(c for c in rep["candidates"] if c["name"] == rep["shipped"])
    shipped["metrics"]["per_class"] = [{"class": k, "n": 10 + k, "auc": 0.9 + k / 100, "sensitivity": 0.8,
                                        "specificity": 0.7} for k in range(3)]
    html = render_html(rep)
    assert 'id="per-class"' in html and "<td>viral</td>" in html and ">0.9200<" in html
    from edgekd.report.writer import markdown

    assert "| viral | 12 | 0.9200 | 0.8000 | 0.7000 |" in markdown(rep)
