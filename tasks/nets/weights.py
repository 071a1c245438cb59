"""Pretrained weights from local files only: a torchvision weights name looked up in the torch hub
cache, a path to a `.pth` state dict, or a visionlab `.ckpt`. Nothing is ever downloaded."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

from visionlab.checkpointing import read_checkpoint
from visionlab.errors import ConfigError

#: experiments that pin their run folder to `<paths.output_dir>/<experiment name>` (finetune_pretrain),
#: so a missing checkpoint in such a folder can name the command that writes it
EXPERIMENT_DIR = Path(__file__).resolve().parents[2] / "conf" / "experiment"


def resolve_weights_file(arch: str, weights: str) -> Path:
    """Path of the state dict meant by `weights` for torchvision model `arch`, checked to exist.

    `weights` is a file path, or a torchvision weights name (`IMAGENET1K_V1` or
    `AlexNet_Weights.IMAGENET1K_V1`) whose file must already sit in the torch hub cache.
    """
    as_path = Path(weights).expanduser()
    if as_path.suffix in (".pth", ".pt", ".ckpt") or as_path.exists():
        if not as_path.is_file():
            raise ConfigError(f"model.weights={weights!r}: no such file{_missing_checkpoint_hint(as_path)}")
        return as_path
    try:
        enum = torchvision.models.get_model_weights(arch)
    except ValueError:
        raise ConfigError(
            f"model.weights={weights!r}: torchvision has no weights for {arch}; pass a .pth state dict or a "
            "visionlab .ckpt, or model.weights=null"
        ) from None
    name = weights.split(".")[-1]
    if name == "DEFAULT":
        entry = enum.DEFAULT
    elif name in enum.__members__:
        entry = enum[name]
    else:
        raise ConfigError(
            f"model.weights={weights!r} is not a weights name of {arch}; expected a .pth path, null, "
            f"or one of {sorted(enum.__members__)}"
        )
    cached = Path(torch.hub.get_dir()) / "checkpoints" / entry.url.rsplit("/", 1)[-1]
    if not cached.is_file():
        raise ConfigError(
            f"model.weights={weights!r}: {cached} is not there and nothing is downloaded at run time. "
            f"On a machine with internet fetch {entry.url} and place the file at that path "
            "(or set TORCH_HOME), or pass model.weights=<path to .pth>, or model.weights=null for random init."
        )
    return cached


def _missing_checkpoint_hint(path: Path) -> str:
    """How to get a missing `<run>/checkpoints/*.ckpt`: the experiment named like its run folder writes
    it (finetune_pretrain), any other run has to be trained first; "" for other files."""
    if path.suffix != ".ckpt" or path.parent.name != "checkpoints":
        return ""
    run = path.parent.parent.name
    if (EXPERIMENT_DIR / f"{run}.yaml").is_file():
        return (
            f"; it is written by `python train.py experiment={run}` (with the same paths.output_dir): "
            "run that first, or set model.weights=null to train from scratch"
        )
    return "; train that run first, or set model.weights=null to train from scratch"


def network_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The torchvision network's keys of a state dict: a visionlab checkpoint stores it under `net.`
    (finetune) or its ResNet under `net.encoder.` (segment); a plain state dict is returned as it is."""
    for prefix in ("net.encoder.", "net."):
        if any(k.startswith(prefix) for k in state):
            return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def load_state_dict_file(module: nn.Module, path: Path, skip_prefixes: tuple[str, ...] = ()) -> None:
    """Load a state dict file into `module` (weights_only), skipping keys of the replaced head.

    Keys starting with `skip_prefixes` are ignored (the new classifier has another shape); any other
    missing or mismatched key is an error naming the file.
    """
    state = read_checkpoint(path)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    state = network_state(state)
    state = {k: v for k, v in state.items() if not k.startswith(skip_prefixes)}
    own = module.state_dict()
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if wrong:
        raise ConfigError(
            f"{path}: shapes do not match the model for {wrong[:5]}; is it a state dict of this arch?"
        )
    result = module.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(skip_prefixes)]
    if missing or result.unexpected_keys:
        raise ConfigError(
            f"{path}: not a state dict of this model (missing {missing[:5]}, unexpected "
            f"{result.unexpected_keys[:5]})"
        )
