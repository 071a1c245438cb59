"""The embed networks: built from `model.*`, truncated after the penultimate layer into an `Embedder`,
and the digit weights the transfer step starts from."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field, NonNegativeInt
from torch import nn

from datamodules.mnist import symbol_transform_from_config
from datamodules.symbols import MNIST_MEAN, MNIST_STD, SymbolSet, load_symbols
from tasks.nets.mnist import ConvNet, MnistNet
from visionlab.checkpointing import read_task_checkpoint
from visionlab.errors import ConfigError
from visionlab.schema import ModelSettings, Settings

#: the task name its checkpoints carry (`EmbedTask.task_name`)
TASK_NAME = "embed"
NETS: dict[str, type[MnistNet] | type[ConvNet]] = {"mnist_net": MnistNet, "convnet": ConvNet}


class EmbedModel(ModelSettings):
    """`model.*` of embed: the MNIST network (`tasks.nets.mnist`) whose penultimate layer is the embedding."""

    archs: ClassVar[tuple[str, ...]] = tuple(NETS)
    task_label: ClassVar[str] = "embed"
    #: dropout before the last layers; null = none
    dropout: float | None = Field(None, ge=0.0, lt=1.0, description="in [0, 1)")


class TransferSettings(Settings):
    """`transfer:` of embed: the digit checkpoint whose last layer is replaced, and the symbol folders
    the new layer trains and is tested on (null = no transfer step)."""

    group: ClassVar[str] = "transfer"
    owner: ClassVar[str] = "embed's transfer"
    from_ckpt: str | None = Field(None, description="a checkpoint path or null")
    train: str | None = Field(None, description="a class-per-folder path or null")
    test: str | None = Field(None, description="a class-per-folder path or null")


class ProjectorSettings(Settings):
    """`projector:` of embed: how many validation digits TensorBoard's projector shows (plus all symbols)."""

    group: ClassVar[str] = "projector"
    owner: ClassVar[str] = "embed's projector"
    digits: NonNegativeInt = Field(500, description="an integer >= 0")


def build_net(model: dict[str, Any], num_classes: int) -> MnistNet | ConvNet:
    """The network named by `model.arch` with `model.dropout` (null = 0)."""
    settings = EmbedModel.parse(model)
    return NETS[settings.arch](dropout=settings.dropout or 0.0, num_classes=num_classes)


class Embedder(nn.Module):
    """A trained network truncated after its penultimate layer: images -> (N, D) embeddings.

    D = 50 for `mnist_net` (fc1's output AFTER its ReLU, so every value is >= 0) and 1000 for
    `convnet` (also after ReLU). Always in evaluation mode (dropout off) and without gradients.
    Input: uint8 pixels, white strokes on black, (N, 28, 28), (N, 28, 28, 1) or (N, 1, 28, 28),
    normalised here with the training data's mean/std; or float (N, 1, 28, 28) already normalised
    (what `load_symbols` returns).
    """

    def __init__(self, net: MnistNet | ConvNet, mean: float = MNIST_MEAN, std: float = MNIST_STD) -> None:
        super().__init__()
        self.net = net.eval()
        self.mean, self.std = float(mean), float(std)
        self.dim = int(net.embedding_dim)

    def train(self, mode: bool = True) -> Embedder:
        return super().train(False)  # stays in evaluation mode: embeddings must not be random

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Any accepted input -> normalised float (N, 1, 28, 28) on the network's device."""
        device = next(self.net.parameters()).device
        x = torch.as_tensor(images).to(device)
        if x.dtype == torch.uint8:
            if x.ndim == 3:
                x = x[:, None]
            elif x.ndim == 4 and x.shape[-1] == 1:
                x = x.permute(0, 3, 1, 2)
            x = (x.float() / 255.0 - self.mean) / self.std
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise ValueError(
                f"expected uint8 (N, 28, 28[, 1]) / (N, 1, 28, 28) or normalised float (N, 1, 28, 28), "
                f"got {x.dtype} {tuple(x.shape)}"
            )
        return x.float()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.embed(self.prepare(images))

    def embed_folder(
        self, folder: str | Path, transform: dict[str, Any] | None = None
    ) -> tuple[torch.Tensor, SymbolSet]:
        """Embed every image of a class-per-folder symbol set (course transform, `symbols.transform`
        keys): returns (embeddings (N, D), the loaded SymbolSet with labels, class names and paths)."""
        symbols = load_symbols(folder, symbol_transform_from_config(transform, self.mean, self.std))
        return self(symbols.images), symbols


def digit_weights(ckpt: Path, model: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The network state dict of a digit checkpoint of this task, for the transfer step."""
    if not ckpt.is_file():
        raise ConfigError(
            f"transfer.from_ckpt={ckpt} is not a file; give a digit checkpoint written by train.py task=embed"
        )
    mismatch = "transfer.from_ckpt={path} is not an embed checkpoint (task: {saved})"
    state = read_task_checkpoint(ckpt, TASK_NAME, detail="", mismatch=mismatch)
    hparams = state.get("hyper_parameters", {})
    if (hparams.get("transfer") or {}).get("from_ckpt"):
        raise ConfigError(
            f"transfer.from_ckpt={ckpt} is itself a transfer checkpoint; give a digit checkpoint"
        )
    arch = (hparams.get("model") or {}).get("arch")
    if arch != model.get("arch"):
        raise ConfigError(f"transfer.from_ckpt={ckpt} holds a {arch} network; pass model={arch}")
    return {k.removeprefix("net."): v for k, v in state["state_dict"].items() if k.startswith("net.")}
