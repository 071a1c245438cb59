"""What every task's LightningModule shares: optimizer and schedule from config, a backbone freeze
schedule whose state follows from the epoch (so it survives a resume), and device-side normalisation."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, Required, TypedDict

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import OmegaConf
from pydantic import ConfigDict, Field, NonNegativeInt, PositiveInt
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from torchmetrics import Metric

from datamodules.contract import gpu_augmented
from visionlab.errors import ConfigError
from visionlab.keys import FREEZE_ALL
from visionlab.optim import build_optimizer, build_scheduler
from visionlab.schema import ModelSettings, Settings


class TaskArgs(TypedDict, total=False):
    """The constructor arguments every task takes (`TaskModule.__init__`), as a subclass passes them on
    with `**args: Unpack[TaskArgs]`; all but `load_pretrained` are saved as primitives."""

    model: Required[dict[str, Any]]
    optimizer: Required[dict[str, Any]]
    scheduler: dict[str, Any] | None
    data_info: dict[str, Any] | None
    load_pretrained: bool


class TaskModule(pl.LightningModule):
    """Base LightningModule: saves the constructor's arguments (primitives only) as hyperparameters,
    builds the optimizer and schedule from the `optimizer` / `scheduler` dicts; subclasses take their
    own arguments and `**args: Unpack[TaskArgs]`, and may override `backbone()` to enable freezing."""

    #: the `task_name` this module implements; stored in every checkpoint it writes
    task_name: str = ""
    #: metric the checkpoint callback follows by default (the task config's `monitor.metric` wins)
    monitor: str = "val/loss"
    #: the test metrics printed at the end of a training run (those present; the rest is in metrics.json)
    summary_metrics: tuple[str, ...] = ()
    #: the typed `model.*` settings the task's networks are built from (None: the task checks its own)
    model_settings_class: ClassVar[type[ModelSettings] | None] = None

    #: constructor arguments that say how to build the module, not what it is: left out of the
    #: hyperparameters (a checkpoint already holds the weights that `load_pretrained` would read)
    not_hyperparameters: ClassVar[tuple[str, ...]] = ("load_pretrained",)

    def __init__(
        self,
        model: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        data_info: dict[str, Any] | None = None,
        load_pretrained: bool = True,
    ) -> None:
        super().__init__()
        # Lightning collects the arguments of every __init__ on the call stack: a subclass's own
        # arguments (stage, metrics, ...) are saved with these
        self.save_hyperparameters(ignore=list(self.not_hyperparameters))
        #: what the module was built for (class or joint names, image size, mean/std): `datamodule.info()`
        self.data_info: dict[str, Any] = dict(data_info or {})
        #: whether to read pretrained weights files (False when a checkpoint brings the weights)
        self.load_pretrained = load_pretrained
        #: scalar results of the last test epoch, for evaluate.py's metrics.json
        self.test_results: dict[str, float] = {}
        #: the epoch's training loss so far (sum of loss x batch size, images): `log_train_loss`
        self._train_loss_sum: torch.Tensor | None = None
        self._train_loss_count = 0

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["task_name"] = self.task_name

    # ---- the epoch's training loss --------------------------------------------------------------
    def log_train_loss(self, loss: torch.Tensor, batch_size: int) -> None:
        """Adds one step's loss to the epoch's batch-size-weighted mean `train/loss`, logged once in
        `on_train_epoch_end`: two additions on the device per step, where a per-step `self.log` costs
        more than the whole step of a small network on a CPU."""
        value = loss.detach().float() * batch_size
        self._train_loss_sum = value if self._train_loss_sum is None else self._train_loss_sum + value
        self._train_loss_count += batch_size

    def on_train_epoch_end(self) -> None:
        """Logs the epoch's mean training loss (TensorBoard, progress bar, metrics.json) and resets it."""
        if self._train_loss_sum is not None and self._train_loss_count:
            self.log("train/loss", self._train_loss_sum / self._train_loss_count, prog_bar=True)
        self._train_loss_sum, self._train_loss_count = None, 0

    def epoch_results(
        self, metric: Metric, scalars: Callable[[Any], dict[str, Any]] | None = None
    ) -> Any | None:
        """`metric` computed over the epoch and reset, and `scalars(results)` logged; None during
        Lightning's sanity check, whose few batches are not an epoch to log."""
        results = metric.compute()
        metric.reset()
        if self._trainer is not None and self.trainer.sanity_checking:
            return None
        if scalars is not None:
            self.log_dict(scalars(results))
        return results

    # ---- optimisation -------------------------------------------------------------------------
    def backbone(self) -> nn.Module | None:
        """The pretrained part that `model.freeze_backbone_epochs` freezes; None = nothing to freeze."""
        return None

    def freeze_settings(self) -> tuple[int | None, float]:
        """(epochs the backbone stays frozen, None = the whole run; backbone lr ratio): `freeze_schedule`."""
        return freeze_schedule(self.hparams.get("model"))

    def backbone_frozen(self, epoch: int | None = None) -> bool:
        """Whether the backbone is frozen at `epoch` (default: the trainer's current epoch)."""
        frozen_epochs, _ = self.freeze_settings()
        if frozen_epochs == 0 or self.backbone() is None:
            return False
        if epoch is None:
            epoch = self.trainer.current_epoch if self._trainer is not None else 0
        return frozen_epochs is None or epoch < frozen_epochs

    def apply_freeze(self) -> None:
        """Set requires_grad and BatchNorm mode of the backbone for the current epoch."""
        backbone = self.backbone()
        if backbone is None:
            return
        frozen = self.backbone_frozen()
        for param in backbone.parameters():
            param.requires_grad_(not frozen)
        if frozen:
            _set_batchnorm_eval(backbone)
        else:  # after an unfreeze: Lightning restores per-module modes after validation, so set them back
            backbone.train(self.training)

    def train(self, mode: bool = True) -> TaskModule:
        """Lightning calls train() after every validation loop: re-freeze BatchNorm statistics there too."""
        super().train(mode)
        if mode and self.backbone() is not None and self.backbone_frozen():
            _set_batchnorm_eval(self.backbone())
        return self

    def on_train_epoch_start(self) -> None:
        self.apply_freeze()

    def on_fit_start(self) -> None:
        self.apply_freeze()

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Head and backbone as separate groups so the backbone can learn at `backbone_lr_ratio` x lr."""
        backbone = self.backbone()
        lr = float(self.hparams.optimizer["lr"])
        if backbone is None:
            return [{"params": [p for p in self.parameters()], "lr": lr}]
        backbone_ids = {id(p) for p in backbone.parameters()}
        head = [p for p in self.parameters() if id(p) not in backbone_ids]
        ratio = self.freeze_settings()[1]
        return [
            {"params": head, "lr": lr, "name": "head"},
            {"params": list(backbone.parameters()), "lr": lr * ratio, "name": "backbone"},
        ]

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(self.parameter_groups(), self.hparams.optimizer)
        max_epochs = self.trainer.max_epochs if self._trainer is not None else 1
        total_steps = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else None
        scheduler = build_scheduler(
            optimizer, self.hparams.get("scheduler"), max_epochs or 1, self.monitor, total_steps
        )
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def compile_networks(self, mode: str = "default", backend: str = "inductor") -> None:
        """torch.compile every child network in place (`compile=true`): their state-dict keys stay the
        same, so checkpoints load with or without compilation; losses and metrics stay eager."""
        for child in self.children():
            if any(True for _ in child.parameters()):
                child.compile(mode=None if backend != "inductor" else mode, backend=backend)

    # ---- data on the device -------------------------------------------------------------------
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """On the device: the data's batched augmentation while training (`data.gpu_augment`), then
        the task's `prepare_batch` (normalisation and the like)."""
        if self._trainer is not None and self.trainer.training:
            batch = gpu_augmented(
                getattr(self.trainer, "datamodule", None), batch, self.trainer.current_epoch
            )
        return self.prepare_batch(batch)

    def prepare_batch(self, batch: Any) -> Any:
        """Turn a batch as the loader yields it (uint8 images) into what the steps take; tasks override."""
        return batch

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, C) -> float (N, C, H, W) scaled by the data's mean/std, channels-last."""
        info = self.hparams.get("data_info", {}) or {}
        return to_float_images(images, info.get("mean"), info.get("std"))

    # ---- reporting ----------------------------------------------------------------------------
    @property
    def tensorboard(self) -> SummaryWriter | None:
        """The TensorBoard writer when a TensorBoard logger is attached (figures, images, embeddings)."""
        if self._trainer is None:
            return None
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                return logger.experiment
        return None

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """Check the task's own keys (model.*, metrics.*, ...) as far as they need no data; the runner
        calls this before any data is loaded. Default: `model.*` parsed with `model_settings_class`;
        tasks with other sections override (the constructor checks what needs the data)."""
        if cls.model_settings_class is not None and cfg.get("model") is not None:
            cls.model_settings_class.parse(plain(cfg.model), f"model={cfg.model.get('arch')}")

    @classmethod
    def from_config(cls, cfg: Any, data_info: dict[str, Any]) -> TaskModule:
        """Build the module for training from the composed config; tasks with extra keys override."""
        return cls(**module_kwargs(cfg, data_info))

    def configure_evaluation(self, cfg: Any) -> None:
        """Called by evaluate.py before testing a loaded checkpoint, with the evaluate config
        (e.g. extra folders to evaluate on); default: nothing."""

    def write_report(self, out_dir: Path) -> None:
        """Write the figures of the last test epoch into `out_dir` (evaluate.py); tasks override."""

    def report_tables(self) -> dict[str, Any]:
        """The last test epoch's tables that metrics.json does not hold (confusion matrices, curves), as
        JSON values: the run folder's tables.json, so its report can be rebuilt later; tasks override."""
        return {}

    def format_report(self) -> str:
        """A readable table of `test_results` for the terminal; tasks may override."""
        width = max((len(k) for k in self.test_results), default=10)
        return "\n".join(f"{k:<{width}}  {v:.4f}" for k, v in sorted(self.test_results.items()))


def to_float_images(
    images: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None
) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) in channels-last memory, optionally mean/std-normalised."""
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    if mean is not None and std is not None:
        m = torch.as_tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        s = torch.as_tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        x = (x - m) / s
    return x.contiguous(memory_format=torch.channels_last)


class BackboneModel(ModelSettings):
    """`model.*` of a network with a (possibly pretrained) backbone and a new head: finetune's
    classifiers and segment's FCN. The freeze schedule is `freeze_schedule`'s."""

    #: a local weights file for the backbone (a torchvision .pth or a visionlab checkpoint); null = random
    weights: str | None = Field(None, description="a weights file path or null")
    #: classes of the new head; null = as many as the data has
    num_classes: PositiveInt | None = Field(None, description="a positive integer or null (from the data)")
    dropout: float | None = Field(None, ge=0.0, lt=1.0, description="in [0, 1)")
    #: 0 = train end to end, N = only the head for epochs < N, all = the whole run
    freeze_backbone_epochs: NonNegativeInt | Literal["all"] | None = Field(
        0, description=f"an integer >= 0 or {FREEZE_ALL} (the whole run)"
    )
    #: the backbone's learning rate over the head's once it trains
    backbone_lr_ratio: float = Field(1.0, gt=0.0, description="a positive number")

    def head_classes(self, class_names: list[str]) -> int:
        """The new head's classes: `num_classes`, else as many as the data's `class_names`; a
        ConfigError when both are given and differ, or when neither is."""
        count = self.num_classes or len(class_names)
        if not count:
            raise ConfigError("model.num_classes is null and the data names no classes (data.class_names)")
        if class_names and count != len(class_names):
            raise ConfigError(
                f"model.num_classes={count} but the data has {len(class_names)} classes "
                f"({', '.join(class_names)}); set model.num_classes=null to follow the data"
            )
        return count


class FreezeSchedule(Settings):
    """The two freeze keys of `BackboneModel`, read from any saved `model` dict (other keys ignored)."""

    model_config = ConfigDict(extra="ignore")
    group: ClassVar[str] = "model"
    freeze_backbone_epochs: NonNegativeInt | Literal["all"] | None = BackboneModel.model_fields[
        "freeze_backbone_epochs"
    ]
    backbone_lr_ratio: float = BackboneModel.model_fields["backbone_lr_ratio"]


def freeze_schedule(model: dict[str, Any] | None) -> tuple[int | None, float]:
    """The backbone freeze schedule of finetune and segment, checked: (`model.freeze_backbone_epochs`:
    0 = train end to end, N = only the head for epochs < N, None for `all` = the whole run;
    `model.backbone_lr_ratio`, the backbone's learning rate over the head's once it trains)."""
    schedule = FreezeSchedule.parse(model)
    epochs = schedule.freeze_backbone_epochs
    return (None if epochs == FREEZE_ALL else int(epochs or 0)), float(schedule.backbone_lr_ratio)


def _set_batchnorm_eval(module: nn.Module) -> None:
    for m in _batchnorms(module):
        m.eval()


def _batchnorms(module: nn.Module) -> Iterator[nn.Module]:
    return (m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))


def plain(node: Any) -> Any:
    """A config node as plain containers (resolved), None as None."""
    return OmegaConf.to_container(node, resolve=True) if node is not None else None


def module_kwargs(cfg: Any, data_info: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments every task takes, as plain containers (checkpoints hold primitives only)."""
    return {
        "model": plain(cfg.model),
        "optimizer": plain(cfg.optimizer),
        "scheduler": plain(cfg.get("scheduler")),
        "data_info": data_info,
    }
