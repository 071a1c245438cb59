"""torchvision classifiers with the last layer replaced for a new number of classes."""

from __future__ import annotations

from typing import Any

import torchvision
from torch import nn

from tasks.nets.weights import load_state_dict_file, resolve_weights_file
from visionlab.errors import ConfigError

#: smallest input side each arch accepts (AlexNet's stride-4 stem and three poolings; VGG's five)
MIN_INPUT_SIZE = {
    "alexnet": 63, "vgg16": 32, "vgg16_bn": 32, "resnet10": 32, "resnet18": 32, "resnet34": 32, "resnet50": 32,
}  # fmt: skip
#: arch -> (attribute path of the layer to replace, prefix of the backbone inside the model)
ARCHS: dict[str, tuple[str, str]] = {
    "alexnet": ("classifier.6", "features"),
    "vgg16": ("classifier.6", "features"),
    "vgg16_bn": ("classifier.6", "features"),
    "resnet10": ("fc", ""),
    "resnet18": ("fc", ""),
    "resnet34": ("fc", ""),
    "resnet50": ("fc", ""),
}


#: torchvision ResNets that torchvision builds but does not name: one BasicBlock per stage (ResNet-10), half
#: the compute of ResNet-18 for small CPU runs. No torchvision weights exist for them.
UNNAMED_RESNETS = {"resnet10": [1, 1, 1, 1]}


def make_torchvision_model(arch: str, **kwargs: Any) -> nn.Module:
    """A randomly initialised torchvision network by name (`resnet10` from torchvision's ResNet class)."""
    if arch in UNNAMED_RESNETS:
        return torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, UNNAMED_RESNETS[arch])
    return torchvision.models.get_model(arch, weights=None, **kwargs)


def check_classifier(arch: Any, image_size: int | None = None) -> None:
    """ConfigError unless `arch` is a known network and `image_size` is large enough for it."""
    if arch not in ARCHS:
        raise ConfigError(f"model.arch={arch!r} is not a finetune model; expected one of {sorted(ARCHS)}")
    if image_size is not None and image_size < MIN_INPUT_SIZE.get(arch, 0):
        raise ConfigError(
            f"data.image_size={image_size} is too small for model.arch={arch} (needs at least {MIN_INPUT_SIZE[arch]} px)"
        )


def build_classifier(
    arch: str, num_classes: int, weights: str | None = None, dropout: float | None = None
) -> nn.Module:
    """The torchvision network `arch` with its last layer (AlexNet/VGG `classifier[6]`, ResNet `fc`)
    replaced by a fresh Linear for `num_classes`, optionally initialised from local weights."""
    check_classifier(arch)
    if num_classes < 2:
        raise ConfigError(f"model.num_classes={num_classes}: a classifier needs at least 2 classes")
    kwargs = {"dropout": float(dropout)} if dropout is not None and not arch.startswith("resnet") else {}
    model = make_torchvision_model(arch, **kwargs)
    head_path, _ = ARCHS[arch]
    if weights:  # the old head is replaced below, so its keys (any number of classes) are not loaded
        load_state_dict_file(model, resolve_weights_file(arch, weights), skip_prefixes=(f"{head_path}.",))
    parent_path, _, attr = head_path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    old = getattr(parent, attr) if not attr.isdigit() else parent[int(attr)]
    new = nn.Linear(old.in_features, num_classes)
    if attr.isdigit():
        parent[int(attr)] = new
    else:
        setattr(parent, attr, new)
    return model


def head_parameters_prefix(arch: str) -> str:
    """State-dict prefix of the replaced layer (e.g. `classifier.6`), the part never frozen."""
    return ARCHS[arch][0]
