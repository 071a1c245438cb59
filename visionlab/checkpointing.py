"""Checkpoints: the one reader (weights_only=True, task checked, saved hyperparameters upgraded to the
current key names), atomic writes, and a guard that stops on a non-finite loss before any checkpoint of
the bad weights is written."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

from visionlab.errors import ConfigError, DataError, VisionlabError
from visionlab.keys import keyword_parameters, upgraded_model

#: what `read_task_checkpoint` says by default when torch.load refuses a file
WEIGHTS_ONLY_REFUSED = "weights_only=True refused or failed: "


def read_checkpoint(
    path: Path, *, mmap: bool | None = None, error: type[VisionlabError] = DataError, detail: str = ""
) -> Any:
    """`torch.load(weights_only=True)` onto the CPU; a file it refuses is one `error` line naming it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:
        raise error(f"{path}: not a loadable checkpoint ({detail}{err})") from None


def read_task_checkpoint(
    path: Path,
    task_name: str,
    *,
    mmap: bool | None = None,
    error: type[VisionlabError] = DataError,
    detail: str = WEIGHTS_ONLY_REFUSED,
    mismatch: str = "{path} is not a {task} checkpoint (task: {found})",
) -> dict[str, Any]:
    """The contents of a checkpoint of `task_name` (see `read_checkpoint`); one of another task is a
    ConfigError from `mismatch`, formatted with path, task, found (saved task or 'unknown') and saved."""
    state = read_checkpoint(path, mmap=mmap, error=error, detail=detail)
    saved = state.get("task_name") if isinstance(state, dict) else None
    if saved != task_name:
        raise ConfigError(mismatch.format(path=path, task=task_name, found=saved or "unknown", saved=saved))
    return upgraded_hparams(state)


def upgraded_hparams(state: dict[str, Any]) -> dict[str, Any]:
    """`state` with its saved `model` hyperparameters under the current key names (a checkpoint written
    before `model.arch` / `model.backbone` / `model.freeze_backbone_epochs`: see keys.upgraded_model)."""
    hparams = state.get("hyper_parameters")
    if not isinstance(hparams, dict) or "model" not in hparams:
        return state
    model = upgraded_model(hparams["model"])
    if model is hparams["model"]:
        return state
    return {**state, "hyper_parameters": {**hparams, "model": model}}


def load_task_checkpoint(module_cls: type, ckpt: Path, task_name: str, **kwargs: Any) -> Any:
    """Load a checkpoint with weights_only=True, its saved hyperparameters upgraded (`upgraded_hparams`)
    and `kwargs` passed to the constructor (with `load_pretrained=False` when it takes that: the
    checkpoint holds the weights); a checkpoint of another task is a clear error."""
    state = read_task_checkpoint(ckpt, task_name)
    model = state.get("hyper_parameters", {}).get("model")
    upgrade = {"model": model} if model is not None else {}
    valid = keyword_parameters(module_cls.__init__)
    no_download = {"load_pretrained": False} if valid is None or "load_pretrained" in valid else {}
    try:
        return module_cls.load_from_checkpoint(
            ckpt, map_location="cpu", weights_only=True, **{**no_download, **upgrade, **kwargs}
        )
    except RuntimeError as err:
        raise ConfigError(
            f"{ckpt}: its weights do not fit the {task_name} model ({str(err).splitlines()[0]})"
        ) from None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file in the same folder, then rename: a kill during a save leaves the
    previous checkpoint intact and loadable. `torch.save` writes the file directly: Lightning's own
    save first serialises the whole checkpoint into memory, a second copy (and 40% more time) that
    the rename makes unnecessary."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            torch.save(checkpoint, tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


class NonFiniteLossError(VisionlabError):
    """The training loss became NaN or infinite."""


class FiniteLossGuard(Callback):
    """Stop when the training loss becomes NaN/Inf, naming the step and the last good checkpoint.

    The check keeps a device-side record of the first bad step (no host sync per step) and reads it
    before validation and at the end of each epoch, i.e. before the checkpoint callbacks save; with
    `check_every_n_steps > 0` it also reads it every that many steps (one sync each time).
    """

    def __init__(self, check_every_n_steps: int = 0) -> None:
        self.check_every_n_steps = check_every_n_steps
        self._first_bad: torch.Tensor | None = None
        self._step: torch.Tensor | None = None

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        if self._first_bad is None or self._first_bad.device != loss.device:
            self._first_bad = torch.full((), -1, device=loss.device, dtype=torch.long)
            self._step = torch.full((), trainer.global_step - 1, device=loss.device, dtype=torch.long)
        else:
            self._step += 1  # a device-side counter: no host-to-device copy per step
        bad = ~torch.isfinite(loss.detach()).all()
        self._first_bad = torch.where(bad & (self._first_bad < 0), self._step, self._first_bad)
        if self.check_every_n_steps and trainer.global_step % self.check_every_n_steps == 0:
            self._raise_if_bad(trainer)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._raise_if_bad(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._raise_if_bad(trainer)

    def _raise_if_bad(self, trainer: pl.Trainer) -> None:
        if self._first_bad is None:
            return
        step = int(self._first_bad)
        if step < 0:
            return
        last = _last_saved_checkpoint(trainer)
        raise NonFiniteLossError(
            f"the training loss became NaN/Inf at step {step} (epoch {trainer.current_epoch}); training stopped "
            f"before saving those weights. Last good checkpoint: {last or 'none yet'}. Lower optimizer.lr, "
            "enable trainer.gradient_clip_val, or check the data."
        )


def _last_saved_checkpoint(trainer: pl.Trainer) -> str:
    """The run's last.ckpt when written, else the newest checkpoint any callback wrote, else ''."""
    saved = [
        Path(p)
        for c in trainer.checkpoint_callbacks
        for p in (getattr(c, "last_model_path", ""), getattr(c, "best_model_path", ""))
        if p and Path(p).is_file()
    ]
    if not saved:
        return ""
    return str(next((p for p in saved if p.name == "last.ckpt"), max(saved, key=lambda p: p.stat().st_mtime)))
