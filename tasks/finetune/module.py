"""`finetune`: a torchvision classifier (AlexNet / VGG16 / ResNet) trained on class-per-folder images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from tasks.base import TaskModule, freeze_schedule, plain
from tasks.metrics.classification import classification_metrics, scalar_results
from tasks.nets.classifiers import ARCHS, build_classifier, check_classifier
from tasks.nets.weights import resolve_weights_file
from visionlab.errors import ConfigError
from visionlab.figures import confusion_figure, labelled_grid, roc_figure, save_figure

#: how many validation images the TensorBoard prediction grid shows (spread over the classes; a green
#: title and frame = right, red = wrong)
GRID_SIZE = 16


class FinetuneTask(TaskModule):
    """Cross-entropy training of `model.arch` on `data_info.class_names`; metrics in
    `tasks.metrics.classification`. `load_pretrained=False` skips `model.weights` (checkpoint loading)."""

    task_name = "finetune"
    monitor = "val/acc"
    summary_metrics = ("test/acc", "test/auroc")

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """The network name, its minimum input size, the freeze schedule and the local weights file,
        before data is loaded."""
        model = plain(cfg.model)
        check_classifier(model.get("arch"), cfg.data.get("image_size"))
        freeze_schedule(model)
        if model.get("weights"):
            resolve_weights_file(str(model["arch"]), str(model["weights"]))

    def __init__(
        self,
        model: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        data_info: dict[str, Any] | None = None,
        load_pretrained: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["load_pretrained"])
        data_info = data_info or {}
        self.class_names: list[str] = list(data_info.get("class_names", []))
        num_classes = model.get("num_classes") or len(self.class_names)
        if self.class_names and num_classes != len(self.class_names):
            raise ConfigError(
                f"model.num_classes={num_classes} but the data has {len(self.class_names)} class folders "
                f"({', '.join(self.class_names)}); set model.num_classes=null to follow the folders"
            )
        check_classifier(model.get("arch"), int(data_info.get("image_size", 224)))
        self.net = build_classifier(
            model["arch"],
            int(num_classes),
            model.get("weights") if load_pretrained else None,
            model.get("dropout"),
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

    def prepare_batch(self, batch: Any) -> Any:
        images, labels = batch
        return self.normalize(images), labels, images

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y, _ = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.train_acc.update(logits, y)
        self.log_train_loss(loss, y.shape[0])
        return loss

    def on_train_epoch_end(self) -> None:
        """The epoch's training loss and accuracy, logged once (no per-step `self.log`)."""
        super().on_train_epoch_end()
        self.log("train/acc", self.train_acc.compute())
        self.train_acc.reset()

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
        results = self.val_metrics.compute()
        self.val_metrics.reset()
        grid, self._grid = self._grid_batch(), None
        if self.trainer.sanity_checking:
            return
        self.log_dict(scalar_results(results, self.class_names, "val"))
        writer, step = self.tensorboard, self.current_epoch
        if writer is None:
            return
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
