"""`model.weights` of finetune: a visionlab checkpoint's network loads with the head replaced."""

from __future__ import annotations

import pytest
import torch

from tasks.nets.classifiers import build_classifier
from visionlab.errors import ConfigError


def test_finetune_checkpoint_backbone_loads_and_head_is_replaced(tmp_path):
    source = build_classifier("resnet10", num_classes=5)
    path = tmp_path / "best.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in source.state_dict().items()}, "epoch": 3}, path)
    target = build_classifier("resnet10", num_classes=3, weights=str(path))
    torch.testing.assert_close(target.conv1.weight, source.conv1.weight)
    torch.testing.assert_close(target.layer4[0].conv2.weight, source.layer4[0].conv2.weight)
    assert target.fc.out_features == 3


def test_segment_checkpoint_encoder_loads_into_a_resnet(tmp_path):
    encoder = build_classifier("resnet18", num_classes=2)
    state = {f"net.encoder.{k}": v for k, v in encoder.state_dict().items() if not k.startswith("fc.")}
    state["net.classifier.weight"] = torch.zeros(4, 16, 1, 1)  # the segment head is not part of it
    torch.save({"state_dict": state}, tmp_path / "seg.ckpt")
    target = build_classifier("resnet18", num_classes=12, weights=str(tmp_path / "seg.ckpt"))
    torch.testing.assert_close(target.layer1[0].conv1.weight, encoder.layer1[0].conv1.weight)


def test_checkpoint_of_another_arch_is_refused_naming_the_file(tmp_path):
    source = build_classifier("resnet10", num_classes=5)
    torch.save({"state_dict": {f"net.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "r10.ckpt")
    with pytest.raises(ConfigError, match=r"r10\.ckpt"):
        build_classifier("resnet18", num_classes=5, weights=str(tmp_path / "r10.ckpt"))


def test_resnet10_has_no_torchvision_weights_names():
    with pytest.raises(ConfigError, match="torchvision has no weights for resnet10"):
        build_classifier("resnet10", num_classes=5, weights="IMAGENET1K_V1")
