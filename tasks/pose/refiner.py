"""Refiner training data: the stage s-1 error distribution per joint and the simulated crop centres
drawn from it (errors in units of the torso diameter of the stage s-1 estimate)."""

from __future__ import annotations

import torch
from torch import Tensor

from tasks.pose.geometry import torso_diameter
from tasks.pose.model import NUM_JOINTS
from visionlab.errors import DataError


def error_statistics(err: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (14, 2) and covariance (14, 2, 2) per joint of the errors `err` (N, 14, 2) weighted by
    visibility `w` (N, 14, 1); joints seen fewer than 3 times borrow the pooled statistics."""
    count = w.sum(dim=0)  # (14, 1)
    mean = (err * w).sum(dim=0) / count.clamp_min(1.0)
    centred = (err - mean) * w.sqrt()
    cov = torch.einsum("nja,njb->jab", centred, centred) / (count[:, :, None] - 1).clamp_min(1.0)
    cov = cov + 1e-4 * torch.eye(2, device=cov.device)  # keep it positive definite
    few = count[:, 0] < 3
    if bool(few.all()):
        raise DataError("too few visible joints in the training set to fit the stage s-1 error statistics")
    if bool(few.any()):  # joints seen fewer than 3 times borrow the pooled statistics
        mean[few], cov[few] = mean[~few].mean(dim=0), cov[~few].mean(dim=0)
    return mean, cov


def simulated_centers(joints: Tensor, estimate: Tensor, err_mean: Tensor, err_cov: Tensor, k: int) -> Tensor:
    """(K, N, 14, 2): truth + torso diameter(estimate) x d, d ~ N(err_mean_i, err_cov_i) per joint."""
    n = joints.shape[0]
    if k == 0:
        return joints.new_zeros(0, n, NUM_JOINTS, 2)
    with torch.autocast(joints.device.type, enabled=False):  # full precision for the sampling
        chol = torch.linalg.cholesky_ex(err_cov.float())[0]  # (14, 2, 2); _ex: no host sync
        z = torch.randn(k, n, NUM_JOINTS, 2, device=joints.device)
        d = err_mean.float() + torch.einsum("jab,knjb->knja", chol, z)
        return joints[None] + torso_diameter(estimate.float())[None, :, None, None] * d
