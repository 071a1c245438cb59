"""Pose metrics of DeepPose: strict PCP per limb group and PDJ over a curve of fractions.

Both take pixel coordinates `preds`, `target` of shape (N, 14, 2) in LSP joint order and the
ground-truth visibility (N, 14) bool; a joint that is not visible is never scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchmetrics import Metric

from datamodules.lsp_format import JOINT_NAMES

TORSO_JOINTS = (9, 2)  # left shoulder, right hip: the torso diameter of the DeepPose paper


@dataclass(frozen=True)
class Limb:
    """A limb from endpoint `a` to endpoint `b`; an endpoint is the mean of its joints (usually one)."""

    name: str
    group: str
    a: tuple[int, ...]
    b: tuple[int, ...]


# Arms and legs as in the paper; torso = hip midpoint (pelvis) to neck, head = neck to head top.
LIMBS = (
    Limb("r_upper_arm", "upper_arms", (8,), (7,)),
    Limb("l_upper_arm", "upper_arms", (9,), (10,)),
    Limb("r_lower_arm", "lower_arms", (7,), (6,)),
    Limb("l_lower_arm", "lower_arms", (10,), (11,)),
    Limb("r_upper_leg", "upper_legs", (2,), (1,)),
    Limb("l_upper_leg", "upper_legs", (3,), (4,)),
    Limb("r_lower_leg", "lower_legs", (1,), (0,)),
    Limb("l_lower_leg", "lower_legs", (4,), (5,)),
    Limb("torso", "torso", (2, 3), (12,)),
    Limb("head", "head", (12,), (13,)),
)
LIMB_GROUPS = ("upper_arms", "lower_arms", "upper_legs", "lower_legs", "torso", "head")
PAPER_GROUPS = ("upper_arms", "lower_arms", "upper_legs", "lower_legs")  # averaged into the paper's "Ave."


def _check(preds: Tensor, target: Tensor, visible: Tensor) -> None:
    if preds.shape != target.shape or preds.dim() != 3 or preds.shape[-2:] != (len(JOINT_NAMES), 2):
        shapes = f"preds {tuple(preds.shape)} and target {tuple(target.shape)}"
        raise ValueError(f"{shapes} must both be (N, 14, 2)")
    if visible.shape != preds.shape[:2]:
        raise ValueError(f"visible {tuple(visible.shape)} must be (N, 14) like preds {tuple(preds.shape)}")


class PCP(Metric):
    """Strict PCP: a limb is correct when BOTH endpoints lie within `threshold` x its GT length of the truth.

    A limb is scored only when all joints of both endpoints are visible. `compute()` returns
    `pcp/<group>` for each of LIMB_GROUPS (NaN when no limb of the group was scored), `pcp/mean`
    (mean of the arm and leg groups, the paper's "Ave.") and `pcp/mean_all` (mean of all six groups).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, threshold: float = 0.5, **kwargs) -> None:
        super().__init__(**kwargs)
        self.threshold = threshold
        self.add_state("correct", default=torch.zeros(len(LIMBS), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros(len(LIMBS), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, visible: Tensor) -> None:
        """Accumulate a batch of pixel coordinates (N, 14, 2) with GT visibility (N, 14)."""
        _check(preds, target, visible)
        preds, target, visible = preds.double(), target.double(), visible.bool()
        for k, limb in enumerate(LIMBS):
            ends = (limb.a, limb.b)
            scored = torch.stack([visible[:, list(e)].all(dim=1) for e in ends]).all(dim=0)
            p_a, p_b = (preds[:, list(e)].mean(dim=1) for e in ends)
            t_a, t_b = (target[:, list(e)].mean(dim=1) for e in ends)
            limit = self.threshold * (t_a - t_b).norm(dim=-1)
            ok = ((p_a - t_a).norm(dim=-1) <= limit) & ((p_b - t_b).norm(dim=-1) <= limit)
            self.correct[k] += (ok & scored).sum()
            self.total[k] += scored.sum()

    def compute(self) -> dict[str, Tensor]:
        """Per-group strict PCP and the two means, as float32 scalar tensors."""
        out = {}
        for group in LIMB_GROUPS:
            idx = [k for k, limb in enumerate(LIMBS) if limb.group == group]
            total = self.total[idx].sum()
            rate = self.correct[idx].sum() / total if total > 0 else torch.full_like(total, float("nan"))
            out[f"pcp/{group}"] = rate.float()
        out["pcp/mean"] = torch.stack([out[f"pcp/{g}"] for g in PAPER_GROUPS]).nanmean()
        out["pcp/mean_all"] = torch.stack([out[f"pcp/{g}"] for g in LIMB_GROUPS]).nanmean()
        return out


class PDJ(Metric):
    """Percentage of Detected Joints: detected when within `fraction` x torso diameter of the truth.

    The torso diameter is the GT distance left shoulder (9) to right hip (2), taken from the GT
    coordinates whatever their visibility flag (LSP annotates occluded joints); samples whose
    diameter is zero are skipped. Evaluated at `num_points` fractions evenly spaced over [0, max_fraction]
    plus the headline fractions 0.2 and 0.5. `compute()` returns `pdj@0.2`, `pdj@0.5` (mean over joints
    of the per-joint rates) and `pdj@0.2/<joint name>`; `curve()` gives the curve for plotting.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    HEADLINE = (0.2, 0.5)

    def __init__(self, num_points: int = 51, max_fraction: float = 0.5, **kwargs) -> None:
        super().__init__(**kwargs)
        grid = torch.linspace(0.0, max_fraction, num_points, dtype=torch.float64)
        fractions = torch.unique(torch.cat([grid, torch.tensor(self.HEADLINE, dtype=torch.float64)]))
        self.register_buffer("fractions", fractions, persistent=False)
        n = len(JOINT_NAMES)
        self.add_state("detected", default=torch.zeros(len(self.fractions), n, dtype=torch.float64),
                       dist_reduce_fx="sum")  # fmt: skip
        self.add_state("total", default=torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, visible: Tensor) -> None:
        """Accumulate a batch of pixel coordinates (N, 14, 2) with GT visibility (N, 14)."""
        _check(preds, target, visible)
        preds, target = preds.double(), target.double()
        diameter = (target[:, TORSO_JOINTS[0]] - target[:, TORSO_JOINTS[1]]).norm(dim=-1)  # (N,)
        scored = visible.bool() & (diameter > 0)[:, None]  # (N, 14)
        dist = (preds - target).norm(dim=-1)  # (N, 14)
        limits = self.fractions[:, None, None] * diameter[None, :, None]  # (F, N, 1)
        self.detected += ((dist[None] <= limits) & scored[None]).sum(dim=1)
        self.total += scored.sum(dim=0)

    def _rates(self) -> Tensor:
        """(F, 14) detection rate per fraction and joint; NaN for a joint never scored."""
        return self.detected / self.total.where(self.total > 0, torch.full_like(self.total, float("nan")))

    def compute(self) -> dict[str, Tensor]:
        """Headline PDJ at 0.2 and 0.5 (mean over joints) and the per-joint values at 0.2."""
        rates = self._rates().float()
        out = {}
        for frac in self.HEADLINE:
            row = rates[self._index(frac)]
            out[f"pdj@{frac}"] = row.nanmean()
            if frac == 0.2:
                out.update({f"pdj@0.2/{name}": row[j] for j, name in enumerate(JOINT_NAMES)})
        return out

    def curve(self, per_joint: bool = False) -> tuple[Tensor, Tensor]:
        """(fractions (F,), detection rate (F,) mean over joints, or (F, 14) with `per_joint=True`)."""
        rates = self._rates().float()
        return self.fractions.float(), rates if per_joint else rates.nanmean(dim=1)

    def _index(self, fraction: float) -> int:
        return int((self.fractions - fraction).abs().argmin())
