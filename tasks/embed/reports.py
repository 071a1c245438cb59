"""Embed results for evaluate.py: the figures and symbols.json it writes, its tables and the text report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tasks.embed.figures import filter_grid_figure, predictions_figure, ssd_table_figure
from tasks.embed.symbols import SymbolReport
from visionlab.figures import confusion_figure, save_figure


def write_report(
    out_dir: Path,
    conv1_weight: torch.Tensor,
    confusion: np.ndarray | None,
    class_names: list[str],
    report: SymbolReport | None,
    mean: float,
    std: float,
) -> None:
    """filters_conv1.png, confusion_matrix.png (digits); with symbols: ssd_table.png,
    symbols_train_loo.png, symbols_test.png and symbols.json (every table)."""
    save_figure(filter_grid_figure(conv1_weight), out_dir / "filters_conv1.png")
    if confusion is not None:
        save_figure(confusion_figure(confusion, class_names), out_dir / "confusion_matrix.png")
    if report is None:
        return
    save_figure(ssd_table_figure(report), out_dir / "ssd_table.png")
    save_figure(
        predictions_figure(
            report.train, report.train.labels, report.loo_1nn, report.loo_knn, report.k, mean, std
        ),
        out_dir / "symbols_train_loo.png",
    )
    if report.test is not None:
        save_figure(
            predictions_figure(
                report.test, report.test.labels, report.test_1nn, report.test_knn, report.k, mean, std
            ),
            out_dir / "symbols_test.png",
        )
    (out_dir / "symbols.json").write_text(json.dumps(report.tables(), indent=1))


def report_tables(
    class_names: list[str], confusion: np.ndarray | None, report: SymbolReport | None
) -> dict[str, Any]:
    """Class names, the digit confusion matrix and the symbol tables (SSD table, 1-NN/k-NN, new images)."""
    out: dict[str, Any] = {"class_names": class_names}
    if confusion is not None:
        out["confusion"] = np.asarray(confusion).astype(int).tolist()
    if report is not None:
        out["symbols"] = report.tables()
    return out


def format_report(results: dict[str, float], class_names: list[str], symbols: str | None) -> str:
    """Digit accuracy overall and per class, then the symbol tables `symbols` when there are any."""
    r = results
    lines = [f"classification accuracy (micro) {r['test/acc']:.4f}", "", "class  accuracy"]
    lines += [f"{n:<5}  {r[f'test/acc_class/{n}']:8.4f}" for n in class_names]
    if symbols is not None:
        lines += ["", symbols]
    return "\n".join(lines)
