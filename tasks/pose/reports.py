"""Pose results per cascade stage: the scalars of metrics.json, the text report, its tables and the
figures evaluate.py writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from datamodules.lsp_format import JOINT_NAMES
from tasks.metrics.pose import LIMB_GROUPS, PCP, PDJ
from tasks.pose.figures import crop_figure, pdj_curve_figure, skeleton_figure
from visionlab.figures import save_figure


def stage_scalars(pcp: PCP, pdj: PDJ) -> dict[str, float]:
    """PCP per group and means, PDJ@0.2 / @0.5 mean and per joint, as python floats."""
    out = {k: float(v) for k, v in pcp.compute().items()}
    headline = pdj.compute()
    fractions, rates = pdj.curve(per_joint=True)
    for frac in (0.2, 0.5):
        out[f"pdj@{frac}"] = float(headline[f"pdj@{frac}"])
        row = rates[int((fractions - frac).abs().argmin())]
        out.update({f"pdj@{frac}/{name}": float(row[j]) for j, name in enumerate(JOINT_NAMES)})
    return out


def stage_labels(stage: int) -> list[str]:
    """The legend of each stage 1 .. `stage`."""
    return [f"stage {k}" for k in range(1, stage + 1)]


def write_report(
    out_dir: Path, curves: list[tuple[np.ndarray, np.ndarray]], samples: dict[str, Any] | None, stage: int
) -> None:
    """pdj_curve.png (one line per stage) and skeletons_stage<k>.png of the last test epoch."""
    if not curves:
        return
    save_figure(pdj_curve_figure(curves, stage_labels(stage)), out_dir / "pdj_curve.png")
    if samples is not None:
        for k in range(1, stage + 1):
            fig = skeleton_figure(samples, k - 1, f"stage {k}")
            save_figure(fig, out_dir / f"skeletons_stage{k}.png")
        if "crops" in samples:
            save_figure(crop_figure(samples["crops"]), out_dir / f"refiner_crops_stage{stage}.png")


def report_tables(curves: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Limb groups and joints in table order, and the PDJ curve (mean over joints) after each stage."""
    rows = [
        {"stage": k, "fractions": frac.tolist(), "pdj": np.nanmean(rates, axis=1).tolist()}
        for k, (frac, rates) in enumerate(curves, start=1)
    ]
    return {"limb_groups": list(LIMB_GROUPS), "joints": list(JOINT_NAMES), "pdj_curves": rows}


def format_report(r: dict[str, float], stage: int) -> str:
    """PCP per limb group and PDJ per joint after each stage, side by side."""
    if not r:
        return "validation metrics of the last stage only (split=val): see metrics.json"
    stages = range(1, stage + 1)
    head = "".join(f"  stage {k:<3d}" for k in stages)

    def row(label: str, key: str) -> str:
        return f"{label:<24}" + "".join(
            f"  {r.get(f'test/stage{k}/{key}', float('nan')):9.4f}" for k in stages
        )

    lines = [f"{'PCP (strict, 0.5)':<24}{head}"]
    lines += [row(g, f"pcp/{g}") for g in LIMB_GROUPS]
    lines += [row("mean (arms + legs)", "pcp/mean"), row("mean (all groups)", "pcp/mean_all"), ""]
    for frac in ("0.2", "0.5"):
        lines.append(f"{f'PDJ@{frac} per joint':<24}{head}")
        lines += [row(name, f"pdj@{frac}/{name}") for name in JOINT_NAMES]
        lines += [row("mean", f"pdj@{frac}"), ""]
    return "\n".join(lines).rstrip()
