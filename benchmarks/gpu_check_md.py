"""gpu_check.md: the tables of `benchmarks.gpu_check`'s report (throughput, pose augmentation, the
packed sweep, the recipes, every step's outcome), from the JSON document `build_report` assembles."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

#: the report's sections, in order, keyed as in gpu_check.json
SECTIONS = ("throughput_default", "throughput_reference", "pose_augmentation", "embed_sweep", "recipes")
SECTION_TITLES = {
    "throughput_default": "Throughput at the GPU defaults (`task=<task> trainer=gpu`)",
    "throughput_reference": "Throughput at the reference input sizes (`experiment=<reference>`)",
    "pose_augmentation": "Pose augmentation (Albumentations in workers vs `data.gpu_augment`) and `compile=true`",
    "embed_sweep": "Embed sweep: jobs one after another vs packed on the one GPU",
    "recipes": "Each task's GPU recipe for a short budget",
}


def _num(value: Any, digits: int = 2) -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "–"
    return f"{value:,.{digits}f}"


def _rate(value: Any) -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "–"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], right: int = 0) -> list[str]:
    """A markdown table; the last `right` columns right-aligned."""
    align = ["---"] * (len(header) - right) + ["---:"] * right
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    return lines + ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]


def throughput_md(section: dict[str, Any]) -> list[str]:
    """The bound / real / loop table with both ratios against their targets."""
    header = ["task", "model", "input", "batch", "precision", "workers", "augment", "(a) bound img/s",
              "(b) real img/s", "(c) loop img/s", "b/a", "b/a target", "b/a result", "b/c", "b/c target", "b/c result"]  # fmt: skip
    rows = []
    for r in section["rows"]:
        if r.get("skipped"):
            rows.append(
                [r["task"], f"not measured: {r['skipped']}", *[""] * 12, r["b_a_result"], r["b_c_result"]]
            )
            continue
        rows.append([r["task"], r["model"], r["input"], r["batch_size"], r["precision"], r["num_workers"], r["augment"],
                     _rate(r["bound"]), _rate(r["real"]), _rate(r["loop"]),
                     _num(r["b_a"]), f">= {r['b_a_target']}", r["b_a_result"],
                     _num(r["b_c"]), f">= {r['b_c_target']}", r["b_c_result"]])  # fmt: skip
    lines = table(header, rows, right=0) if rows else ["not measured (see the step's log below)"]
    return ([f"`{section['command']}`", ""] if section.get("command") else []) + lines


def pose_md(section: dict[str, Any], dry_run: bool) -> list[str]:
    """The augmentation and compile rows and their speedups."""
    rows = [[r["what"], _rate(r["bound"]), _rate(r["real"]), _rate(r["loop"]),
             _num(r["pipeline_efficiency"]), _num(r["framework_overhead"]),
             "dry run" if dry_run else ("measured" if r["real"] is not None else f"missing {r.get('skipped') or ''}".strip())]
            for r in section["rows"]]  # fmt: skip
    lines = table(
        ["run", "(a) bound img/s", "(b) real img/s", "(c) loop img/s", "b/a", "b/c", "result"], rows
    )
    lines += ["", f"kornia on the GPU against Albumentations in workers (real img/s): "
              f"{_num(section['gpu_augment_speedup'])}x; `compile=true` against eager: "
              f"{_num(section['compile_speedup_real'])}x real, {_num(section['compile_speedup_bound'])}x bound."]  # fmt: skip
    if dry_run:
        lines += [
            "",
            "In a dry run `compile=true` runs with TORCH_COMPILE_DISABLE=1 (inductor takes minutes on a CPU).",
        ]
    if section["augment_alone"]:
        lines += [
            "",
            "Augmentation alone (`python -m benchmarks.augment`, random images of the recipe's size):",
            "",
        ]
        lines += table(["path", "ops", "img/s", "result"],
                       [[r["path"], r["ops"], _rate(r["images_per_second"]), "dry run" if dry_run else "measured"]
                        for r in section["augment_alone"]])  # fmt: skip
    return lines


def sweep_md(section: dict[str, Any]) -> list[str]:
    """Sequential and packed wall times, the jobs each completed, the speedup against its target."""
    rows = [[r["run"], r["status"], f"{r.get('completed', 0)}/{r['expected_jobs']}", _num(r["wall_s"], 1),
             _num(r.get("mean_job_wall_s"), 1), "; ".join(r.get("errors") or [])] for r in section["rows"]]  # fmt: skip
    lines = [f"`python train.py -m task=embed trainer={section['trainer']} {' '.join(section['sweep'])}`, then the same with "
             f"`hydra/launcher=packed hydra.launcher.n_jobs={section['rows'][0]['expected_jobs']}`", "",
             *table(["run", "step", "jobs completed", "wall s", "mean job wall s", "errors"], rows)]  # fmt: skip
    speedup = f"Speedup sequential / packed: {_num(section['speedup'])}x (target >= {section['target']:.0f}x)"
    return [*lines, "", f"{speedup}: **{section['result']}**"]


def recipes_md(section: dict[str, Any]) -> list[str]:
    """Wall time and headline metric of each recipe."""
    rows = [[r["task"], r["status"], _num(r["wall_s"], 1), _num(r["train_s"], 1), r["metric"],
             _num(r["value"], 3), r["result"]] for r in section["rows"]]  # fmt: skip
    lines = [f"`python train.py task=<task> trainer={section['trainer']} trainer.max_epochs={section['epochs']}` (train, then "
             "test the best checkpoint, then the run's report); wall s is the whole command, train s its "
             "`time/train_s`", ""]  # fmt: skip
    return lines + table(["task", "step", "wall s", "train s", "metric", "value", "result"], rows)


def steps_md(steps: dict[str, Any]) -> list[str]:
    """Every step's status, time and budget, with the error line of a failed one."""
    rows = [[name, s["status"], _num(s["wall_s"], 1), s.get("limit_s") or "–", s.get("budget_s") or "–",
             s["log"], s.get("error") or ""] for name, s in steps.items()]  # fmt: skip
    header = ["step", "status", "wall s", "limit s", "H200 budget s", "log", "error"]
    return table(header, rows)


def markdown(doc: dict[str, Any]) -> str:
    """gpu_check.md: the machine, then one section per measurement, then the steps."""
    dry_run = bool(doc.get("dry_run"))
    targets = doc.get("targets", {})
    lines = ["# GPU check", ""]
    if dry_run:
        lines += ["**Dry run**: every step on the CPU with tiny sizes, to show that each command runs; "
                  "the numbers mean nothing and no target is judged (every result says `dry run`).", ""]  # fmt: skip
    lines += [f"- date: {doc.get('date', '?')}", f"- machine: {doc.get('machine', '?')}",
              f"- device: {doc['throughput_default'].get('device') or doc.get('gpu', '?')}",
              f"- versions: {doc.get('versions', '?')}", f"- git: {doc.get('git', '?')}",
              f"- command: `{doc.get('command', '?')}`",
              f"- wall time of the steps: {doc['wall_s']:.0f} s (budget {doc.get('budget_s', '?')} s)",
              "- targets: b/a (pipeline efficiency) >= 0.9 for pose and defect, >= 0.8 for the others; "
              f"b/c (framework overhead) >= {targets.get('framework_overhead', 0):g}; packed sweep >= "
              f"{targets.get('packed_sweep_speedup', 0):g}x faster than sequential", ""]  # fmt: skip
    bodies = {
        "throughput_default": throughput_md(doc["throughput_default"]),
        "throughput_reference": throughput_md(doc["throughput_reference"]),
        "pose_augmentation": pose_md(doc["pose_augmentation"], dry_run),
        "embed_sweep": sweep_md(doc["embed_sweep"]),
        "recipes": recipes_md(doc["recipes"]),
    }
    for key in SECTIONS:
        lines += [f"## {SECTION_TITLES[key]}", "", *bodies[key], ""]
    lines += ["## Steps", "", *steps_md(doc["steps"]), ""]
    return "\n".join(lines)
