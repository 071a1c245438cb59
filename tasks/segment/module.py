"""`segment`: FCN semantic segmentation (`model.arch=fcn`: a ResNet backbone, `model.backbone`, as the
encoder; a transposed-conv decoder) on VOC-layout data.

Training minimises per-pixel cross-entropy, ignoring void (255). `model.freeze_backbone_epochs=N`
trains decoder and classifier alone for the first N epochs (encoder weights and BatchNorm statistics
untouched), then everything with the encoder at `model.backbone_lr_ratio` x the head's learning rate
(the schedule finetune uses too: `tasks.base.freeze_schedule`). The frozen state follows from the
epoch, so a run resumed after epoch N keeps training the encoder. Figures: `tasks.segment.figures`;
reports: `tasks.segment.reports`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal, Unpack

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeInt, PositiveInt, model_validator
from torch import nn

from datamodules.voc_format import VOID
from tasks.base import BackboneModel, TaskArgs, TaskModule, plain, to_float_images
from tasks.metrics.segmentation import SegmentationScores
from tasks.nets.fcn import ARCH, BACKBONES, DEFAULT_BACKBONE, DEFAULT_DECODER, FCN, check_skips
from tasks.nets.weights import load_state_dict_file, resolve_weights_file
from tasks.segment import reports
from tasks.segment.figures import overlay_panel
from tasks.segment.reports import scalar_scores
from visionlab.checkpointing import load_task_checkpoint
from visionlab.errors import ConfigError
from visionlab.figures import confusion_figure, save_figure

#: samples shown in the TensorBoard overlays and in evaluate.py's overlay panel
OVERLAY_SAMPLES = 4
#: `model.loss`: per-pixel cross-entropy, or cross-entropy + `model.dice_weight` x soft Dice
LOSSES = ("ce", "ce_dice")


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = VOID) -> torch.Tensor:
    """1 - mean over classes of the soft Dice 2|P.T| / (|P| + |T|), over the whole batch's non-void pixels.

    P = softmax probabilities, T = one-hot targets. The mean runs over the classes present in the
    batch's (non-void) ground truth, so each class weighs the same whatever its pixel count (the
    imbalance that plain cross-entropy, dominated by background pixels, does not correct); classes
    absent from the ground truth are still pushed down by the cross-entropy term. 0 for an all-void batch.
    """
    num_classes = logits.shape[1]
    keep = (target != ignore_index).unsqueeze(1).to(logits.dtype)
    probs = logits.float().softmax(dim=1) * keep
    onehot = F.one_hot(target.clamp(max=num_classes - 1).long(), num_classes).permute(0, 3, 1, 2)
    onehot = onehot.to(probs.dtype) * keep
    dims = (0, 2, 3)
    intersection = (probs * onehot).sum(dims)
    truth = onehot.sum(dims)
    denominator = probs.sum(dims) + truth
    present = truth > 0
    if not present.any():
        return logits.sum() * 0.0
    dice = 2 * intersection[present] / denominator[present].clamp(min=1e-6)
    return 1.0 - dice.mean()


class SegmentModel(BackboneModel):
    """`model.*` of segment: the FCN (`tasks.nets.fcn`), its ResNet backbone, decoder and loss."""

    archs: ClassVar[tuple[str, ...]] = (ARCH,)
    task_label: ClassVar[str] = "segment"
    backbone: Literal[BACKBONES] = Field(DEFAULT_BACKBONE, description=f"one of {list(BACKBONES)}")  # type: ignore[valid-type]
    decoder_channels: list[PositiveInt] = Field(
        list(DEFAULT_DECODER), min_length=1, description="a non-empty list of positive integers"
    )
    decoder_batch_norm: bool = Field(True, description="true or false")
    #: ResNet stages the encoder keeps (4 = all, stride 32)
    encoder_stages: Literal[1, 2, 3, 4] = Field(4, description="1, 2, 3 or 4 ResNet stages")
    #: decoder blocks that add the encoder map of their stride (FCN-16s/8s-style skips)
    skips: NonNegativeInt = Field(0, description="an integer >= 0")
    loss: Literal[LOSSES] = Field("ce", description=f"one of {list(LOSSES)}")  # type: ignore[valid-type]
    dice_weight: float = Field(1.0, ge=0.0, description="a number >= 0")

    @model_validator(mode="after")
    def _check_skips(self) -> SegmentModel:
        try:
            check_skips(self.skips, len(self.decoder_channels), self.encoder_stages)
        except ConfigError as err:
            raise ValueError(str(err)) from None
        return self


class SegmentTask(TaskModule):
    """FCN trained on `data_info.class_names`; scores from `tasks.metrics.segmentation.SegmentationScores`.
    `load_pretrained=False` skips `model.weights` (checkpoint loading)."""

    task_name = "segment"
    monitor = "val/miou"
    summary_metrics = ("test/miou", "test/pixel_acc")
    model_settings_class = SegmentModel

    def __init__(self, **args: Unpack[TaskArgs]) -> None:
        super().__init__(**args)
        data_info = self.data_info
        self.class_names: list[str] = list(data_info.get("class_names", []))
        self.model_settings = settings = SegmentModel.parse(args["model"], "model=fcn")
        num_classes = settings.head_classes(self.class_names)
        self.class_names = self.class_names or [f"class_{k}" for k in range(num_classes)]
        self.net = FCN(
            num_classes=int(num_classes),
            encoder=settings.backbone,
            decoder_channels=tuple(settings.decoder_channels),
            dropout=settings.dropout or 0.0,
            batch_norm=settings.decoder_batch_norm,
            encoder_stages=settings.encoder_stages,
            skips=settings.skips,
        )
        self.loss_name, self.dice_weight = settings.loss, settings.dice_weight
        if self.load_pretrained and settings.weights:
            path = resolve_weights_file(settings.backbone, settings.weights)
            skip = ("fc.", *self.net.encoder.dropped_prefixes)
            load_state_dict_file(self.net.encoder, path, skip_prefixes=skip)
        self.val_scores = self._scores(num_classes)
        self.test_scores = self._scores(num_classes)
        self.compare_scores = self._scores(num_classes)
        #: a second model evaluated on the same test batches (evaluate.py compare_ckpt=...)
        self.compare_net: nn.Module | None = None
        self._compare_info: dict[str, Any] = {}
        self._samples: dict[str, torch.Tensor] = {}
        self._test_scores: dict[str, Any] = {}

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """`model.*` and the backbone's local weights file, before data is loaded."""
        settings = SegmentModel.parse(plain(cfg.model), "model=fcn")
        if settings.weights:
            resolve_weights_file(settings.backbone, settings.weights)

    def _scores(self, num_classes: int) -> SegmentationScores:
        return SegmentationScores(int(num_classes), VOID, self.class_names, validate_args=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    # ---- freezing -----------------------------------------------------------------------------
    def backbone(self) -> nn.Module | None:
        """The ResNet encoder: what `model.freeze_backbone_epochs` freezes (TaskModule's schedule)."""
        return self.net.encoder

    # ---- steps --------------------------------------------------------------------------------
    def prepare_batch(self, batch: Any) -> Any:
        images, masks = batch
        return self.normalize(images), masks.long(), images

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over non-void pixels (0, not NaN, for a batch that is all void).
        This is the logged `*/loss` whatever `model.loss` trains with, so runs stay comparable."""
        total = F.cross_entropy(logits.float(), target, ignore_index=VOID, reduction="sum")
        return total / (target != VOID).sum().clamp(min=1)

    def training_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """What is minimised: cross-entropy, plus `dice_weight` x soft Dice with `model.loss=ce_dice`."""
        loss = self._loss(logits, target)
        if self.loss_name == "ce_dice" and self.dice_weight > 0:
            loss = loss + self.dice_weight * soft_dice_loss(logits, target, VOID)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y, _ = batch
        logits = self(x)
        loss = self.training_loss(logits, y)
        self.log_train_loss(self._loss(logits.detach(), y), y.shape[0])
        return loss

    def _eval_step(self, batch: Any, batch_idx: int, stage: str) -> None:
        x, y, raw = batch
        logits = self(x)
        self.log(f"{stage}/loss", self._loss(logits, y), on_step=False, on_epoch=True)
        preds = logits.argmax(dim=1)
        (self.val_scores if stage == "val" else self.test_scores).update(preds, y)
        compare_preds = None
        if stage == "test" and self.compare_net is not None:
            info = self._compare_info
            x_compare = to_float_images(raw, info.get("mean"), info.get("std"))
            compare_preds = self.compare_net(x_compare).argmax(dim=1)
            self.compare_scores.update(compare_preds, y)
        if batch_idx == 0 and not self.trainer.sanity_checking:
            n = OVERLAY_SAMPLES
            self._samples = {"images": raw[:n].cpu(), "targets": y[:n].cpu(), "preds": preds[:n].cpu()}
            if compare_preds is not None:
                self._samples["compare"] = compare_preds[:n].cpu()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    # ---- epoch ends ---------------------------------------------------------------------------
    def on_validation_epoch_end(self) -> None:
        scores = self.epoch_results(self.val_scores, lambda r: scalar_scores(r, self.class_names, "val"))
        if scores is None or self.tensorboard is None:
            return
        writer, step = self.tensorboard, self.current_epoch
        matrix = scores["confusion_matrix"].cpu().numpy()
        writer.add_figure(
            "val/confusion_matrix",
            confusion_figure(matrix, self.class_names, f"validation, epoch {step}", percent=True),
            step,
        )
        if self._samples:
            writer.add_figure("val/overlays", self._overlay_figure(), step)

    def on_test_epoch_end(self) -> None:
        scores = self.test_scores.compute()
        self.test_scores.reset()
        results = scalar_scores(scores, self.class_names, "test")
        self._test_scores = {"main": scores}
        if self.compare_net is not None:
            compare = self.compare_scores.compute()
            self.compare_scores.reset()
            self._test_scores["compare"] = compare
            results.update(scalar_scores(compare, self.class_names, "compare"))
        self.test_results = results
        self.log_dict(results)
        writer = self.tensorboard
        if writer is not None:
            matrix = scores["confusion_matrix"].cpu().numpy()
            writer.add_figure(
                "test/confusion_matrix", confusion_figure(matrix, self.class_names, "test", percent=True)
            )
            if self._samples:
                writer.add_figure("test/overlays", self._overlay_figure())

    def _overlay_figure(self) -> Any:
        s = self._samples
        predictions = [("prediction", s["preds"].numpy())]
        if "compare" in s:
            predictions = [("prediction (ckpt_path)", s["preds"].numpy()),
                           ("prediction (compare_ckpt)", s["compare"].numpy())]  # fmt: skip
        return overlay_panel(
            s["images"].numpy().astype(np.uint8), s["targets"].numpy(), predictions, self.class_names
        )

    # ---- evaluation ---------------------------------------------------------------------------
    def configure_evaluation(self, cfg: Any) -> None:
        """`compare_ckpt=<file>`: load a second segment checkpoint, evaluated on the same batches."""
        compare = cfg.get("compare_ckpt")
        self._ckpt_names = (str(cfg.get("ckpt_path")), str(compare) if compare else None)
        if not compare:
            return
        path = Path(str(compare)).expanduser()
        if not path.is_file():
            raise ConfigError(f"compare_ckpt={compare} is not a file; give a .ckpt written by train.py")
        other = load_task_checkpoint(type(self), path, self.task_name)
        info = other.hparams.get("data_info", {}) or {}
        if list(info.get("class_names", [])) != self.class_names:
            raise ConfigError(
                f"compare_ckpt={compare} was trained on classes {info.get('class_names')}, "
                f"ckpt_path on {self.class_names}; both must have the same classes"
            )
        mine = (self.hparams.get("data_info") or {}).get("image_size")
        if info.get("image_size") != mine:
            raise ConfigError(
                f"compare_ckpt={compare} was trained at data.image_size={info.get('image_size')}, "
                f"ckpt_path at {mine}; both are evaluated on the same {mine} px images, so they must match"
            )
        self.compare_net = other.net
        self._compare_info = info

    def write_report(self, out_dir: Path) -> None:
        """confusion_matrix.png (+ .csv), overlays.png and, with compare_ckpt, compare_confusion_matrix.png."""
        if not self._test_scores:
            return
        reports.write_confusion(Path(out_dir), self._test_scores, self.class_names)
        if self._samples:
            save_figure(self._overlay_figure(), Path(out_dir) / "overlays.png")

    def report_tables(self) -> dict[str, Any]:
        """Class names and the test confusion matrix of pixel counts (with compare_ckpt, also its own)."""
        names = getattr(self, "_ckpt_names", ("ckpt_path", "compare_ckpt"))
        return reports.report_tables(self._test_scores, self.class_names, names)

    def format_report(self) -> str:
        """The reference's `class #k (name): value` + `mean_iou` lines; with compare_ckpt, both models
        side by side per class. Classes absent from the split's ground truth and predictions print n/a."""
        if not self._test_scores:
            return super().format_report()
        names = getattr(self, "_ckpt_names", ("ckpt_path", "compare_ckpt"))
        return reports.format_report(self._test_scores, self.class_names, names)
