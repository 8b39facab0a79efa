"""report.json → report.md and the terminal table. report.json is the source of every number."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .._io import write_json_atomic, write_text_atomic

SCHEMA_VERSION = 3  # 2: metrics.auc_ci/ece/operating_point/val_sensitivity/per_class, clinical, sensitivity budget;
# 3: metrics.val_auc, shipping chosen on val (chosen_on, val, confirmation, confirmed, non_inferiority), clinical.vs_teacher


def _fmt(v: Any, spec: str = ".3f") -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def _size(n: int | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _millions(n: int | None) -> str:
    return "—" if n is None else f"{n / 1e6:.3f} M"


TABLE_COLUMNS = ("candidate", "backend", "precision", "AUC", "sens", "spec", "acc", "p50 ms", "p99 ms", "size", "params", "MACs")


def table_rows(report: dict) -> list[list[str]]:
    rows = []
    for c in report["candidates"]:
        m, lat = c.get("metrics") or {}, c.get("latency_ms") or {}
        name = c["name"] + (" ✔ shipped" if c["name"] == report.get("shipped") else "")
        rows.append([
            name, c["backend"], c["precision"],
            _fmt(m.get("auc"), ".4f"), _fmt(m.get("sensitivity")), _fmt(m.get("specificity")), _fmt(m.get("accuracy")),
            _fmt(lat.get("p50")), _fmt(lat.get("p99")), _size(c.get("size_bytes")),
            _millions(c.get("params")), _millions(c.get("macs")),
        ])
    return rows


def columns_and_rows(report: dict) -> tuple[tuple[str, ...], list[list[str]]]:
    """The result table of the report's task (classification, or segmentation's Dice table)."""
    if report.get("task") == "segmentation":
        from .segmentation import SEG_COLUMNS, seg_table_rows

        return SEG_COLUMNS, seg_table_rows(report)
    return TABLE_COLUMNS, table_rows(report)


def rich_table(report: dict):
    from rich.table import Table

    t = Table(title=f"edgekd · target {report['target']['name']} · test split", show_lines=False)
    cols, rows = columns_and_rows(report)
    for col in cols:
        t.add_column(col, justify="left" if col in ("candidate", "backend", "precision") else "right")
    for c, row in zip(report["candidates"], rows):
        style = "bold green" if c["name"] == report.get("shipped") else ("dim" if c["role"] == "baseline" else None)
        t.add_row(*row, style=style)
    return t


def markdown(report: dict) -> str:
    tgt, teacher, ds = report["target"], report["teacher"], report["dataset"]
    mach, pre, ship = report["machine"], report["preprocessing"], report["shipping"]
    lines = [
        f"# edgekd compression report — {tgt['name']}",
        "",
        f"- created: {report['created']} (edgekd {report['edgekd_version']}, seed {report['seed']})",
        f"- teacher: `{teacher['spec']}` ({teacher['format']}, sha256 `{teacher['sha256']}`)",
        f"- data: `{ds['path']}` ({ds['format']}{', SYNTHETIC' if ds.get('synthetic') else ''}; "
        f"{ds['num_classes']} classes {ds['class_names']}; image {ds['image_size'][0]}×{ds['image_size'][1]}×{ds['channels']}; "
        f"splits {ds['splits']}; sha256 `{ds['sha256']}`)",
        f"- preprocessing (the device must apply exactly this): {' → '.join(pre['order'])}; "
        f"resize to {pre['image_size'] or 'as is'} ({pre['interpolation']}); mean {pre['mean']}, std {pre['std']}; layout {pre['layout']}",
        f"- machine: {mach['cpu']} ({', '.join(mach['isa']) or 'no SIMD flags read'}), {mach['threads']} threads, "
        f"{mach['os']}, Python {mach['python']}",
        f"- runtimes: {', '.join(f'{k} {v}' for k, v in mach['runtimes'].items())}",
        "",
        "## Result",
        "",
    ]
    if report.get("shipped"):
        lines.append(f"**Shipped: `{report['shipped']}`** — {ship['reason']}")
    else:
        lines.append(f"**Nothing shipped** — {ship['reason']}")
    seg = report.get("task") == "segmentation"
    if seg:
        from .segmentation import seg_shipping_lines

        lines += seg_shipping_lines(ship)
    else:
        lines += shipping_markdown(ship)
    cols, rows = columns_and_rows(report)
    lines += ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    rule = ((report.get("clinical") or {}).get("operating_point") or {}).get("rule", "Youden's J")
    lines += [
        "",
        ("Dice, IoU and HD95 are on test, val Dice on val (what the choice is made on); "
         if seg else f"Sensitivity and specificity are at the operating point chosen on val "
         f"({rule}); AUC, accuracy and ")
        + f"latency are on test. Latency: batch 1, {mach['threads']} threads, "
        f"{report['config']['bench']['warmup']} warm-up runs then the median/p99 of at least "
        f"{report['config']['bench']['iterations']} timed runs, more until the median is stable "
        f"(benchmarks/README.md, \"Latency method\").",
        "",
    ]
    if report.get("precision_notes"):
        lines += ["## Precision chosen by measurement", ""] + [f"- {n['note']}" for n in report["precision_notes"]] + [""]
    lines += ["## Stages", ""]
    for name, st in report.get("stages", {}).items():
        summary = ", ".join(f"{k} {_fmt(v, '.4g')}" for k, v in st.items() if not isinstance(v, (list, dict)))
        lines.append(f"- **{name}**: {summary}")
    if seg:
        from .segmentation import seg_markdown

        lines += seg_markdown(report)
    else:
        lines += clinical_markdown(report)
    from .robustness import markdown as robustness_markdown

    lines += robustness_markdown(report)
    if report.get("search"):
        from ..search import SearchResult
        from .search import markdown_table

        lines += ["", "## Search (`--search`): the configurations tried", "",
                  markdown_table(SearchResult.from_dict(report["search"]))]
    lines += device_section(report)
    if report.get("bundle"):
        lines += ["", "## Bundle", "", f"`{report['bundle']['path']}/`: " + ", ".join(report["bundle"]["files"]),
                  "(see its README.txt to run it on the device)"]
    agreements = [c for c in report["candidates"] if c.get("agreement")]
    if agreements:
        lines += ["", "## Lowered models checked against their torch source", "",
                  "| candidate | source | agreement | max abs logit diff | allowed |", "|---|---|---|---|---|"]
        for c in agreements:
            a = c["agreement"]
            lines.append(f"| {c['name']} | {a.get('source', '')} | {a['agreement']:.2%} | {a['max_abs_diff']:.2e} | "
                         f"≥ {a['min_agreement']:.1%}, ≤ {a['max_abs_diff_allowed']:.1e} |")
    rt = [c for c in report["candidates"] if c.get("runtime_config")]
    if rt:
        lines += ["", "## Runtime settings used", ""]
        for c in rt:
            lines.append(f"- {c['name']}: " + ", ".join(f"{k}={v}" for k, v in c["runtime_config"].items()))
    return "\n".join(lines) + "\n"


def shipping_markdown(ship: dict) -> list[str]:
    """How the choice was made (val), its one test confirmation, and the paired comparison with the teacher."""
    from .clinical import non_inferiority_text

    if not ship.get("chosen_on"):
        return []  # a report from before the choice moved to val
    lines = ["", f"- rule: {ship['rule']}"]
    conf = ship.get("confirmation")
    if conf:
        verdict = "confirmed" if conf["confirmed"] else "NOT confirmed"
        lines.append(f"- chosen on {ship['chosen_on']}: `{conf['candidate']}`; {verdict} on test "
                     f"(AUC {_fmt(conf['auc'], '.4f')} vs floor {_fmt(conf['min_auc'], '.4f')}, sensitivity "
                     f"{_fmt(conf['sensitivity'], '.4f')} vs floor {_fmt(conf['min_sensitivity'], '.4f')})")
    if ship.get("non_inferiority"):
        lines.append(f"- `{ship['chosen']}`: {non_inferiority_text(ship['non_inferiority'])}")
    return lines


def vs_teacher_markdown(report: dict) -> list[str]:
    from .clinical import non_inferiority_text

    paired = report["clinical"].get("vs_teacher") or {}
    if not paired:
        return []
    return ["", "### Students vs the teacher (paired bootstrap of the test cases)", ""] + [
        f"- `{name}`: {non_inferiority_text(v)}" for name, v in paired.items()]


def clinical_markdown(report: dict) -> list[str]:
    """The clinical figures of report.html as text (same numbers, same report.json fields)."""
    cl = report.get("clinical")
    if not cl:
        return []
    op, bs, ship = cl["operating_point"], cl["bootstrap"], report["shipping"]
    agree = cl.get("teacher_agreement", {})
    lines = ["", "## Clinical figures (test split)", "",
             f"- operating point `{op['setting']}`: {op['rule']}; teacher threshold {_fmt(op['teacher_threshold'], '.4f')}, "
             f"teacher val sensitivity {_fmt(op['teacher_val_sensitivity'], '.4f')}",
             f"- AUC 95 % CI: {bs['method']} bootstrap, {bs['resamples']} resamples (seed {bs['seed']}); "
             f"ECE: top-label, {cl['ece_bins']} equal-width bins",
             f"- budgets: AUC drop ≤ {ship.get('max_auc_drop')}, sensitivity drop ≤ {ship.get('max_sensitivity_drop')} "
             f"({', '.join(f'{k}: {v}' for k, v in (ship.get('budget_source') or {}).items())}); "
             f"rejected for sensitivity: {', '.join(ship.get('rejected_for_sensitivity') or []) or 'none'}",
             f"- Pareto front (AUC vs p50): {', '.join(cl['pareto_front'])}",
             "", "| candidate | AUC | AUC 95 % CI | sensitivity | specificity | threshold | operating point | ECE | agrees with teacher |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in report["candidates"]:
        m = c.get("metrics") or {}
        ci = m.get("auc_ci")
        lines.append(f"| {c['name']} | {_fmt(m.get('auc'), '.4f')} | {'—' if not ci else f'{ci[0]:.4f}–{ci[1]:.4f}'} | "
                     f"{_fmt(m.get('sensitivity'), '.4f')} | {_fmt(m.get('specificity'), '.4f')} | "
                     f"{_fmt(m.get('threshold'), '.4f')} | {m.get('operating_point', '—')} | {_fmt(m.get('ece'), '.4f')} | "
                     f"{_fmt(agree.get(c['name']), '.4f')} |")
    lines += vs_teacher_markdown(report)
    lines += waterfall_markdown(report) + disagreement_markdown(report) + per_class_markdown(report)
    return lines


def waterfall_markdown(report: dict) -> list[str]:
    from .plots import waterfall_values

    names = report["clinical"].get("waterfall", [])
    lines = ["", "### Stage by stage", "", "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for title, values in waterfall_values(report):
        lines.append(f"| {title} | " + " | ".join("—" if v is None else f"{v:.4g}" for v in values) + " |")
    return lines


def disagreement_markdown(report: dict) -> list[str]:
    dis = report["clinical"].get("disagreements")
    if not dis:
        return []
    lines = ["", "### Where the shipped model and the teacher disagree", "",
             f"`{dis['model']}` and `{dis['teacher']}` agree on {dis['agreement']:.4f} of {dis['n']} test cases; "
             f"they disagree on {dis['disagreements_total']} ({len(dis['cases'])} listed, largest probability gap first; "
             "probabilities: P(class 1) for two classes, else of the predicted class).", "",
             "| test index | true | teacher | teacher prob | model | model prob |", "|---|---|---|---|---|---|"]
    lines += [f"| {c['index']} | {c['label']} | {c['teacher_pred']} | {c['teacher_prob']:.3f} | {c['model_pred']} | "
              f"{c['model_prob']:.3f} |" for c in dis["cases"]]
    return lines


def per_class_markdown(report: dict) -> list[str]:
    shipped = next((c for c in report["candidates"] if c["name"] == report.get("shipped")), None)
    pc = ((shipped or {}).get("metrics") or {}).get("per_class")
    if not pc:
        return []
    names = report["dataset"].get("class_names") or []
    lines = ["", "### Per class (shipped model, one-vs-rest, argmax)", "",
             "| class | test cases | AUC | sensitivity | specificity |", "|---|---|---|---|---|"]
    lines += [f"| {names[p['class']] if p['class'] < len(names) else p['class']} | {p['n']} | {_fmt(p['auc'], '.4f')} | "
              f"{_fmt(p['sensitivity'], '.4f')} | {_fmt(p['specificity'], '.4f')} |" for p in pc]
    return lines


def device_section(report: dict) -> list[str]:
    """Host and device figures side by side, each labelled by where it was measured."""
    dev = report.get("device_measurements") or []
    if not dev:
        return []
    by = {c["name"]: c for c in report["candidates"]}
    lines = ["", "## Measured on the device", "",
             "| candidate | measured on | runtime | batch | p50 ms | p90 ms | p99 ms | images/s | AUC | accuracy |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(m["candidate"] for m in dev):
        c = by.get(name, {})
        lat, met = c.get("latency_ms") or {}, c.get("metrics") or {}
        host = f"host: {report['machine']['cpu']}"
        lines.append(f"| {name} | {host} | {c.get('backend', '—')} (on host) | 1 | {_fmt(lat.get('p50'))} | "
                     f"{_fmt(lat.get('p90'))} | {_fmt(lat.get('p99'))} | {_fmt(lat.get('throughput_ips'), '.0f')} | "
                     f"{_fmt(met.get('auc'), '.4f')} | {_fmt(met.get('accuracy'))} |")
        for m in (m for m in dev if m["candidate"] == name):
            d, rt, lat, met = m.get("device") or {}, m.get("runtime") or {}, m["latency_ms"], m.get("metrics") or {}
            where = f"device: {d.get('model') or d.get('hostname') or '?'}"
            runtime = f"{rt.get('name', '?')} {rt.get('version', '')} {rt.get('precision', '')}".strip()
            lines.append(f"| {name} | {where} | {runtime} | {m.get('batch') or 1} | {_fmt(lat.get('p50'))} | "
                         f"{_fmt(lat.get('p90'))} | {_fmt(lat.get('p99'))} | {_fmt(m.get('throughput_ips'), '.0f')} | "
                         f"{_fmt(met.get('auc'), '.4f')} | {_fmt(met.get('accuracy'))} |")
    lines += ["", "Device AUC and accuracy are on the bundle's sample (a subset of test); host figures on the whole test split."]
    return lines


def write_report(report: dict, out: Path) -> None:
    write_json_atomic(out / "report.json", report)
    write_text_atomic(out / "report.md", markdown(report))
