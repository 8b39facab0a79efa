"""A segmentation run's report: the Dice/IoU/HD95 table, the shipping lines and the worst-case overlays.

Every figure is read from report.json (``candidates[].metrics``, ``shipping``, ``segmentation``);
the overlays (image, ground truth, teacher, shipped student, for the shipped model's worst test
images by Dice) are drawn once, by the benchmark stage, from the predictions measured in that run,
and saved as ``overlays.png`` next to the report.
"""
from __future__ import annotations

from html import escape
from pathlib import Path

import numpy as np

from .writer import _fmt, _millions, _size

SEG_COLUMNS = ("candidate", "backend", "precision", "Dice", "Dice 95 % CI", "IoU", "HD95 px", "val Dice",
               "p50 ms", "p99 ms", "size", "params", "MACs")
OVERLAY_FILE = "overlays.png"


def _ci(ci) -> str:
    return "—" if not ci else f"{ci[0]:.4f}–{ci[1]:.4f}"


def seg_table_rows(report: dict) -> list[list[str]]:
    rows = []
    for c in report["candidates"]:
        m, lat = c.get("metrics") or {}, c.get("latency_ms") or {}
        name = c["name"] + (" ✔ shipped" if c["name"] == report.get("shipped") else "")
        rows.append([name, c["backend"], c["precision"], _fmt(m.get("dice"), ".4f"), _ci(m.get("dice_ci")),
                     _fmt(m.get("iou"), ".4f"), _fmt(m.get("hd95"), ".2f"), _fmt(m.get("val_dice"), ".4f"),
                     _fmt(lat.get("p50")), _fmt(lat.get("p99")), _size(c.get("size_bytes")),
                     _millions(c.get("params")), _millions(c.get("macs"))])
    return rows


def seg_shipping_lines(ship: dict) -> list[str]:
    lines = ["", f"- rule: {ship['rule']}"]
    conf = ship.get("confirmation")
    if conf:
        verdict = "confirmed" if conf["confirmed"] else "NOT confirmed"
        lines.append(f"- chosen on val: `{conf['candidate']}`; {verdict} on test (Dice {_fmt(conf['dice'], '.4f')} "
                     f"vs floor {_fmt(conf['min_dice'], '.4f')})")
    v = ship.get("non_inferiority")
    if v:
        lines.append(f"- `{ship['chosen']}` vs the teacher: {paired_text(v)}")
    return lines


def paired_text(v: dict) -> str:
    ci = v.get("ci")
    text = f"test Dice difference {v['dice_diff']:+.4f}"
    if ci:
        text += f" (95 % CI {ci[0]:+.4f} … {ci[1]:+.4f}, {v['method']})"
        if v.get("margin") is not None:
            verdict = "non-inferior" if ci[0] > -v["margin"] else "non-inferiority not shown"
            text += f"; {verdict} at a margin of {v['margin']}"
    return text


def seg_markdown(report: dict) -> list[str]:
    """The segmentation section of report.md (after the result table)."""
    seg = report.get("segmentation") or {}
    names = seg.get("class_names") or []
    lines = ["", "## Segmentation", "", f"- metric: {seg.get('metric', 'mean Dice')}"]
    per = [c for c in report["candidates"] if (c.get("metrics") or {}).get("per_class")]
    if per and len(names) > 2:
        lines += ["", "| candidate | " + " | ".join(f"Dice {n}" for n in names[1:]) + " |",
                  "|---|" + "---|" * (len(names) - 1)]
        lines += [f"| {c['name']} | " + " | ".join(_fmt(d, ".4f") for d in c["metrics"]["per_class"]["dice"][1:]) + " |"
                  for c in per]
    split = [c for c in report["candidates"] if (c.get("metrics") or {}).get("images_without") is not None]
    if split:
        lines += ["", "### Images with and without the class", "",
                  "Mean Dice mixes two questions: how well a lesion is outlined where there is one, and whether the "
                  "model marks one where there is none (such an image scores 0 however few pixels are marked).", "",
                  "| candidate | val Dice where present | val false alarms | test Dice where present | "
                  "test false alarms |", "|---|---|---|---|---|"]
        lines += [f"| {c['name']} | {_fmt(m.get('val_dice_present'), '.4f')} | {_alarms(m, 'val_')} | "
                  f"{_fmt(m.get('dice_present'), '.4f')} | {_alarms(m, '')} |"
                  for c in split for m in [c["metrics"]]]
    lines += small_regions_lines(report)
    vs = [(c["name"], c["metrics"]["vs_teacher"]) for c in report["candidates"]
          if c.get("role") == "student" and (c.get("metrics") or {}).get("vs_teacher")]
    if vs:
        lines += ["", "### Students vs the teacher (paired bootstrap over test images)", ""]
        lines += [f"- `{n}`: {paired_text(v)}" for n, v in vs]
    cases = seg.get("overlays") or []
    if cases:
        lines += ["", f"### Worst test images of the shipped model (`{OVERLAY_FILE}`: image, truth, teacher, student)",
                  "", "| test image | student Dice | teacher Dice |", "|---|---|---|"]
        lines += [f"| {o['index']} | {o['student_dice']:.4f} | {o['teacher_dice']:.4f} |" for o in cases]
    return lines


def small_regions_lines(report: dict) -> list[str]:
    """report.md's "Small regions" part: the rule, where its sizes came from, each model's val Dice with and without."""
    rule = (report.get("segmentation") or {}).get("small_regions")
    if not rule:
        return []
    lines = ["", "### Small regions", "", f"- smallest region kept per class: {rule['min_region']} px ({rule['source']})",
             f"- {rule['rule']}", "", "| candidate | val Dice (argmax) | val Dice (small regions cleared) | kept |",
             "|---|---|---|---|"]
    for c in report["candidates"]:
        d = (c.get("metrics") or {}).get("decision")
        if d:
            lines.append(f"| {c['name']} | {_fmt(d['val_dice_argmax'], '.4f')} | {_fmt(d['val_dice_cleared'], '.4f')} | "
                         f"{'yes' if d['applied'] else 'no'} |")
    return lines


def _alarms(m: dict, prefix: str) -> str:
    n, of = m.get(f"{prefix}false_alarms"), m.get(f"{prefix}images_without")
    return "—" if n is None or of is None else f"{n} of {of}"


def write_overlays(path: Path, images: np.ndarray, truth: np.ndarray, teacher: np.ndarray, student: np.ndarray,
                   cases: list[dict], mean: list[float], std: list[float]) -> Path | None:
    """Rows of (image, truth, teacher, student) for ``cases``; masks drawn over the image in colour."""
    if not cases:
        return None
    from .plots import _plt

    plt = _plt()
    fig, axes = plt.subplots(len(cases), 4, figsize=(8, 2.1 * len(cases)), squeeze=False)
    for row, case in zip(axes, cases):
        i = case["index"]
        img = images[i].transpose(1, 2, 0) * np.asarray(std, dtype=np.float32) + np.asarray(mean, dtype=np.float32)
        img = np.clip(img[..., 0] if img.shape[-1] == 1 else img, 0, 1)
        for ax, (title, mask) in zip(row, (("image", None), ("truth", truth[i]), ("teacher", teacher[i]),
                                            ("student", student[i]))):
            ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            if mask is not None:
                ax.imshow(np.ma.masked_equal(mask, 0), cmap="autumn", alpha=0.45, vmin=0, vmax=max(1, int(mask.max())))
            extra = {"student": f" Dice {case['student_dice']:.2f}", "teacher": f" Dice {case['teacher_dice']:.2f}"}
            ax.set_title(f"#{i} {title}" if title == "image" else title + extra.get(title, ""), fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def seg_html(report: dict, out: Path | None) -> str:
    """The segmentation sections of report.html: the candidates table and the overlays."""
    import base64

    rows = []
    for c, r in zip(report["candidates"], seg_table_rows(report)):
        cls = "shipped" if c["name"] == report.get("shipped") else ("baseline" if c["role"] == "baseline" else "")
        fields = [None, None, None, "metrics.dice", "metrics.dice_ci", "metrics.iou", "metrics.hd95", "metrics.val_dice",
                  "latency_ms.p50", "latency_ms.p99", "size_bytes", "params", "macs"]
        cells = "".join(f'<td class="num" data-candidate="{escape(c["name"])}" data-field="{f}">{escape(v)}</td>'
                        if f else f"<td>{escape(v)}</td>" for v, f in zip(r, fields))
        rows.append(f'<tr class="{cls}">{cells}</tr>')
    head = "".join(f"<th>{escape(h)}</th>" for h in SEG_COLUMNS)
    parts = ["<h2>Candidates (test split)</h2>",
             f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>",
             f"<p class='muted'>{escape((report.get('segmentation') or {}).get('metric', ''))}</p>"]
    rule = (report.get("segmentation") or {}).get("small_regions")
    if rule:
        kept = ", ".join(rule["kept_by"]) or "none"
        parts.append(f"<p class='muted'>Small regions: smallest region kept per class {escape(str(rule['min_region']))} "
                     f"px ({escape(rule['source'])}); {escape(rule['rule'])}. Kept by: {escape(kept)}.</p>")
    png = Path(out) / OVERLAY_FILE if out is not None else None
    if png is not None and png.exists():
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        parts += ["<h2>Worst test images of the shipped model</h2>",
                  f'<figure id="fig-overlays"><img class="plot" alt="overlays" src="data:image/png;base64,{data}">'
                  "<figcaption>Image, ground truth, teacher and shipped student (masks in colour) for the shipped "
                  "model's lowest-Dice test images.</figcaption></figure>"]
    return "".join(parts)
