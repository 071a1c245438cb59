"""pose: PCP per limb group and PDJ per joint after each stage of the chain, the PDJ curve, skeletons."""

from __future__ import annotations

import re

from visionlab.report.collect import Run
from visionlab.report.doc import Cell, Section, Table, Text
from visionlab.report.sections.common import figure, names_under, split_prefix

#: fractions of the torso diameter at which the PDJ curve is tabulated
CURVE_POINTS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)


def stages(run: Run) -> list[int]:
    """The stages whose test metrics the run holds (a chained stage-s run holds 1..s); [] = unnumbered."""
    found = {int(m.group(1)) for k in run.metrics if (m := re.match(r"(?:test|val)/stage(\d+)/", k))}
    return sorted(found)


def build(run: Run) -> list[Section]:
    p, numbered = split_prefix(run), stages(run)
    shown = numbered or [int(run.config.get("stage") or 1)]

    def key(stage: int, name: str) -> str:
        return f"{p}/stage{stage}/{name}" if numbered else f"{p}/{name}"

    def rows(labels: list[tuple[str, str]]) -> list[list[Cell]]:
        out: list[list[Cell]] = []
        for label, name in labels:
            values = [run.metrics.get(key(k, name)) for k in shown]
            gain = [values[-1] - values[0]] if len(shown) > 1 and None not in (values[0], values[-1]) else []
            out.append([label, *values, *gain])
        return out

    heads = [f"stage {k}" for k in shown]
    gain_head = [f"stage {shown[-1]} − stage {shown[0]}"] if len(shown) > 1 else []
    groups = run.tables.get("limb_groups") or names_under(run, f"{p}/pcp/", ("mean", "mean_all"))
    pcp = Table(
        ["limb group", *heads, *gain_head],
        rows(
            [(g, f"pcp/{g}") for g in groups]
            + [("mean (arms + legs)", "pcp/mean"), ("mean (all groups)", "pcp/mean_all")]
        ),
        caption="PCP (strict, 0.5): a limb is correct when both its ends are within half the limb's length of the truth",
    )
    joints = run.tables.get("joints") or names_under(run, f"{p}/pdj@0.2/")
    pdj_rows = []
    for label, suffix in [(j, f"/{j}") for j in joints] + [("mean", "")]:
        pdj_rows.append(
            [
                label,
                *(run.metrics.get(key(k, f"pdj@{frac}{suffix}")) for frac in ("0.2", "0.5") for k in shown),
            ]
        )
    pdj = Table(
        ["joint", *(f"PDJ@{frac} {h}" for frac in ("0.2", "0.5") for h in heads)],
        pdj_rows,
        caption="PDJ: share of joints within the fraction of the torso diameter from the truth",
    )
    curve = Section("PDJ curve").add(
        figure(run, "PDJ against the normalised distance", "pdj_curve.png", "test/pdj_curve")
    )
    curves = run.tables.get("pdj_curves") or []
    if curves:
        table_rows: list[list[Cell]] = []
        for frac in CURVE_POINTS:
            cells: list[Cell] = [f"{frac:g}"]
            for c in curves:
                i = min(range(len(c["fractions"])), key=lambda n, c=c: abs(c["fractions"][n] - frac))
                cells.append(c["pdj"][i])
            table_rows.append(cells)
        curve.add(Table(["fraction of torso diameter", *(f"stage {c['stage']}" for c in curves)], table_rows))
    if not curve.blocks:
        curve.add(Text("no PDJ curve was recorded (a run with a TensorBoard logger or evaluate.py draws it)"))
    examples = Section("Example predictions").add(
        *(
            figure(run, f"stage {k}: ground truth (green) vs prediction (red)", f"skeletons_stage{k}.png")
            for k in shown
        ),
    )
    if not examples.blocks:
        examples.add(
            figure(
                run,
                f"stage {shown[-1]}: ground truth (green) vs prediction (red)",
                "test/skeletons",
                "val/skeletons",
            )
        )
    examples.add(figure(run, "refiner crops", f"refiner_crops_stage{shown[-1]}.png", "val/refiner_crops"))
    return [Section("PCP per limb").add(pcp), Section("PDJ per joint").add(pdj), curve, examples]
