"""Optimizers from config dicts: the fused Adam(W) default and the keys that turn it off."""

from __future__ import annotations

import pytest
import torch

from visionlab.errors import ConfigError
from visionlab.optim import build_optimizer


def _groups() -> list[dict]:
    return [{"params": [torch.nn.Parameter(torch.ones(3))]}]


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_adam_variants_are_fused_by_default(name: str) -> None:
    optimizer = build_optimizer(_groups(), {"name": name, "lr": 1e-3})
    assert optimizer.defaults["fused"] is True


@pytest.mark.parametrize("override", [{"fused": False}, {"foreach": True}])
def test_fused_false_or_foreach_choose_the_other_implementations(override: dict) -> None:
    optimizer = build_optimizer(_groups(), {"name": "adamw", "lr": 1e-3, **override})
    assert not optimizer.defaults["fused"]


def test_fused_and_plain_adamw_take_the_same_step() -> None:
    steps = []
    for fused in (True, False):
        param = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
        optimizer = build_optimizer([{"params": [param]}], {"name": "adamw", "lr": 0.1, "fused": fused})
        param.grad = torch.tensor([0.5, -0.25, 1.0])
        optimizer.step()
        steps.append(param.detach().clone())
    torch.testing.assert_close(steps[0], steps[1])


def test_sgd_is_left_as_torch_builds_it() -> None:
    optimizer = build_optimizer(_groups(), {"name": "sgd", "lr": 0.1, "momentum": 0.9})
    assert not optimizer.defaults.get("fused")


def test_a_key_the_optimizer_does_not_take_names_it() -> None:
    with pytest.raises(ConfigError, match=r"optimizer: .*lrr"):
        build_optimizer(_groups(), {"name": "adam", "lr": 1e-3, "lrr": 0.1})
