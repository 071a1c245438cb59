"""`finetune`: a torchvision classifier (AlexNet / VGG16 / ResNet) trained on class-per-folder images."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Unpack

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from tasks.base import BackboneModel, TaskArgs, plain
from tasks.classifier import ClassifierTask
from tasks.metrics.classification import classification_metrics, scalar_results
from tasks.nets.classifiers import ARCHS, build_classifier, check_classifier
from tasks.nets.weights import resolve_weights_file
from visionlab.figures import confusion_figure, labelled_grid, roc_figure, save_figure

#: how many validation images the TensorBoard prediction grid shows (spread over the classes; a green
#: title and frame = right, red = wrong)
GRID_SIZE = 16


class FinetuneModel(BackboneModel):
    """`model.*` of finetune: a torchvision classifier (`tasks.nets.classifiers`) with a new last layer."""

    archs: ClassVar[tuple[str, ...]] = tuple(sorted(ARCHS))
    task_label: ClassVar[str] = "finetune"


class FinetuneTask(ClassifierTask):
    """Cross-entropy training of `model.arch` on `data_info.class_names`; metrics in
    `tasks.metrics.classification`. `load_pretrained=False` skips `model.weights` (checkpoint loading)."""

    task_name = "finetune"
    monitor = "val/acc"
    summary_metrics = ("test/acc", "test/auroc")
    model_settings_class = FinetuneModel

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """The network name, its minimum input size, the freeze schedule and the local weights file,
        before data is loaded."""
        settings = FinetuneModel.parse(plain(cfg.model), f"model={cfg.model.get('arch')}")
        check_classifier(settings.arch, cfg.data.get("image_size"))
        if settings.weights:
            resolve_weights_file(settings.arch, settings.weights)

    def __init__(self, **args: Unpack[TaskArgs]) -> None:
        super().__init__(**args)
        data_info = self.data_info
        self.class_names: list[str] = list(data_info.get("class_names", []))
        self.model_settings = settings = FinetuneModel.parse(args["model"])
        num_classes = settings.head_classes(self.class_names)
        check_classifier(settings.arch, int(data_info.get("image_size", 224)))
        self.net = build_classifier(
            settings.arch,
            int(num_classes),
            settings.weights if self.load_pretrained else None,
            settings.dropout,
        )
        self.train_acc = MulticlassAccuracy(int(num_classes), average="micro")
        self.val_metrics = classification_metrics(int(num_classes))
        self.test_metrics = classification_metrics(int(num_classes))
        #: validation images kept for the prediction grid, per class: [(image, label, prediction)]
        self._grid: dict[int, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] | None = None
        self._test_curves: dict[str, Any] = {}
        #: the test images of the last test epoch's prediction grid (image, label, prediction)
        self._test_grid: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def backbone(self) -> nn.Module | None:
        """Everything but the replaced last layer (a view: not registered, so no duplicate weights)."""
        head = ARCHS[self.hparams.model["arch"]][0]
        if head == "fc":
            return nn.ModuleList([m for name, m in self.net.named_children() if name != "fc"])
        return nn.ModuleList([self.net.features, *list(self.net.classifier)[:6]])

    def classification_loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, labels)

    def _eval_step(self, batch: Any, stage: str) -> None:
        x, y, raw = batch
        logits = self(x)
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), on_step=False, on_epoch=True)
        probs = logits.float().softmax(dim=1)
        (self.val_metrics if stage == "val" else self.test_metrics).update(probs, y)
        self._collect_grid(raw, y, probs.argmax(1))

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        grid, self._grid = self._grid_batch(), None
        results = self.epoch_results(self.val_metrics, lambda r: scalar_results(r, self.class_names, "val"))
        if results is None or self.tensorboard is None:
            return
        writer, step = self.tensorboard, self.current_epoch
        writer.add_figure(
            "val/confusion_matrix",
            confusion_figure(results["confusion"].cpu().numpy(), self.class_names),
            step,
        )
        writer.add_figure("val/roc", self._roc_figure(results), step)
        if grid is not None:
            writer.add_figure("val/predictions", self._prediction_grid(*grid), step)

    def on_test_epoch_end(self) -> None:
        results = self.test_metrics.compute()
        self.test_metrics.reset()
        self.test_results = scalar_results(results, self.class_names, "test")
        self.log_dict(self.test_results)
        self._test_curves = {
            k: v for k, v in results.items() if k in ("confusion", "roc", "acc_per_class", "auroc")
        }
        self._test_curves["roc_auc"] = self._per_class_auc(results)
        self._test_grid, self._grid = self._grid_batch(), None
        writer = self.tensorboard
        if writer is not None:
            writer.add_figure(
                "test/confusion_matrix",
                confusion_figure(results["confusion"].cpu().numpy(), self.class_names),
            )
            writer.add_figure("test/roc", self._roc_figure(results))
            if self._test_grid is not None:
                writer.add_figure("test/predictions", self._prediction_grid(*self._test_grid))

    def _per_class_auc(self, results: dict[str, Any]) -> list[float]:
        fpr, tpr, _ = results["roc"]
        return [float(torch.trapezoid(t.float(), f.float()).abs()) for f, t in zip(fpr, tpr, strict=True)]

    def _roc_figure(self, results: dict[str, Any]) -> Any:
        fpr, tpr, _ = results["roc"]
        fpr = [f.cpu().numpy() for f in fpr]
        tpr = [t.cpu().numpy() for t in tpr]
        return roc_figure(fpr, tpr, self.class_names, self._per_class_auc(results))

    def _collect_grid(self, raw: torch.Tensor, y: torch.Tensor, preds: torch.Tensor) -> None:
        """Keep up to ceil(GRID_SIZE / classes) validation (or test) images per class (the splits are
        sorted by class, so the first images would all be of one class)."""
        if self._grid is None:
            self._grid = {}
        quota = -(-GRID_SIZE // max(len(self.class_names), 1))
        for label in y.unique().tolist():
            kept = self._grid.setdefault(int(label), [])
            if len(kept) >= quota:
                continue
            idx = (y == label).nonzero().flatten()[: quota - len(kept)]
            kept.extend(zip(raw[idx].cpu(), y[idx].cpu(), preds[idx].cpu(), strict=True))

    def _grid_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """The kept images, one class after another round-robin (first of each class, then second...)."""
        if not self._grid:
            return None
        per_class = [self._grid[c] for c in sorted(self._grid)]
        picked = [kept[i] for i in range(max(map(len, per_class))) for kept in per_class if i < len(kept)]
        picked = picked[:GRID_SIZE]
        return tuple(torch.stack([item[k] for item in picked]) for k in range(3))  # type: ignore[return-value]

    def _prediction_grid(self, images: torch.Tensor, labels: torch.Tensor, preds: torch.Tensor) -> Any:
        titles = [
            f"{self.class_names[t]} -> {self.class_names[p]}"
            for t, p in zip(labels.tolist(), preds.tolist(), strict=True)
        ]
        colors = ["green" if t == p else "red" for t, p in zip(labels.tolist(), preds.tolist(), strict=True)]
        return labelled_grid(images.numpy().astype(np.uint8), titles, colors)

    def write_report(self, out_dir: Path) -> None:
        """confusion_matrix.png, roc.png and predictions.png (a grid of test images) of the last test epoch."""
        if not self._test_curves:
            return
        save_figure(
            confusion_figure(self._test_curves["confusion"].cpu().numpy(), self.class_names),
            out_dir / "confusion_matrix.png",
        )
        save_figure(self._roc_figure(self._test_curves), out_dir / "roc.png")
        if self._test_grid is not None:
            save_figure(self._prediction_grid(*self._test_grid), out_dir / "predictions.png")

    def report_tables(self) -> dict[str, Any]:
        """Class names, the test confusion matrix and each class's one-vs-rest ROC-AUC."""
        out: dict[str, Any] = {"class_names": self.class_names}
        if self._test_curves:
            out["confusion"] = self._test_curves["confusion"].cpu().long().tolist()
            out["roc_auc"] = [float(a) for a in self._test_curves["roc_auc"]]
        return out

    def format_report(self) -> str:
        r = self.test_results
        lines = [
            f"accuracy (micro) {r['test/acc']:.4f}   ROC-AUC (macro, one-vs-rest) {r['test/auroc']:.4f}",
            "",
        ]
        aucs = self._test_curves.get("roc_auc", [float("nan")] * len(self.class_names))
        width = max(len(n) for n in self.class_names)
        lines.append(f"{'class':<{width}}  accuracy  ROC-AUC")
        for name, auc in zip(self.class_names, aucs, strict=True):
            lines.append(f"{name:<{width}}  {r[f'test/acc_class/{name}']:8.4f}  {auc:7.4f}")
        return "\n".join(lines)
