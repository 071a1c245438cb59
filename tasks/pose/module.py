"""`pose`: DeepPose (Toshev & Szegedy 2014) with cascade stages on LSP-format data.

* `stage=1`: `DeepPoseNet` regresses all 14 joints in the box-normalised frame N(y; b) of the network
  input (box = the whole letterboxed image: centre S/2, size S), L2 loss over visible joints, Adam.
* `stage=s>1`: a refiner of the same family. For joint i it sees a square crop centred on the stage
  s-1 estimate of joint i, side `model.sigma` x the torso diameter of the stage s-1 estimate,
  resized to the network input, and regresses the true joint in that crop's normalised frame (one
  network per stage shared by all joints; output pair i is joint i's, `select_joints`). Training
  crops: the stage s-1 predictions on the training batch (computed on the fly by the frozen parent
  chain, so they follow any augmentation) plus `model.simulated_per_joint` crops per joint centred on
  truth + a displacement drawn from N(mu_i, Sigma_i), the stage s-1 error distribution fitted per
  joint on the (unaugmented) training set at the start of fitting. Errors are normalised by the
  torso diameter of the stage s-1 estimate, the quantity the crop side is proportional to.
* Inference runs the chain: stage 1, then each refiner in turn; a stage-s checkpoint stores its
  stage and the paths of its parents' checkpoints (stage 1 .. s-1), loaded with weights_only=True
  (`tasks.pose.chain`). Figures: `tasks.pose.figures`; reports: `tasks.pose.reports`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Unpack

import numpy as np
import torch
from torch import Tensor, nn

from datamodules.contract import PlainLoading
from tasks.base import TaskArgs, TaskModule, module_kwargs
from tasks.metrics.pose import PCP, PDJ
from tasks.nets.deeppose import select_joints
from tasks.pose import reports
from tasks.pose.chain import ChainStage, load_chain, parent_checkpoints
from tasks.pose.figures import crop_figure, crop_panels, pdj_curve_figure, skeleton_figure
from tasks.pose.geometry import Crops, crop_around, denormalize_from_box, normalize_to_box, torso_diameter
from tasks.pose.model import NUM_JOINTS, PoseModel, build_net, masked_l2
from tasks.pose.refiner import error_statistics, simulated_centers
from visionlab.errors import ConfigError, DataError

log = logging.getLogger(__package__)  # "tasks.pose", as before the package
#: how many validation / test images the skeleton figures show
NUM_SAMPLES = 8


class PoseTask(TaskModule):
    """DeepPose stage `stage` (1 = initial regressor, >1 = refiner) on LSP joints; see the module doc."""

    task_name = "pose"
    monitor = "val/pcp/mean"
    summary_metrics = ("test/pcp/mean", "test/pdj@0.2", "test/pdj@0.5")
    model_settings_class = PoseModel

    #: `load_parents=False` builds a stage without reading its parents' checkpoints
    not_hyperparameters = ("load_pretrained", "load_parents")

    def __init__(
        self,
        stage: int = 1,
        parent_ckpts: list[str] | None = None,
        load_parents: bool = True,
        **args: Unpack[TaskArgs],
    ) -> None:
        super().__init__(**args)
        data_info, model = self.data_info, args["model"]
        self.image_size = int(data_info.get("image_size", 220))
        self.stage = int(stage)
        parent_ckpts = [str(p) for p in parent_ckpts or []]
        if self.stage < 1:
            raise ConfigError(f"stage={stage}: expected 1 (initial regressor) or more (refiners)")
        if len(parent_ckpts) != self.stage - 1:
            raise ConfigError(f"stage={stage} needs {self.stage - 1} parent checkpoints, got {parent_ckpts}")
        self.model_settings = PoseModel.parse(model)
        self.sigma, self.min_crop = self.model_settings.sigma, self.model_settings.min_crop
        self.simulated = self.model_settings.simulated_per_joint
        self.net = build_net(self.model_settings, self.image_size)
        # Parents are frozen and kept out of the state dict (a plain list, not submodules): the
        # checkpoint holds this stage's weights only and names its parents' files.
        self.parents: list[ChainStage] = load_chain(parent_ckpts, PoseTask) if load_parents else []
        if self.stage > 1:
            # stage s-1 error distribution per joint, normalised by the torso diameter of its estimate
            self.register_buffer("err_mean", torch.zeros(NUM_JOINTS, 2))
            self.register_buffer("err_cov", torch.eye(2).repeat(NUM_JOINTS, 1, 1) * 0.01)
            if self.load_pretrained and self.model_settings.init_from_previous and self.parents:
                try:
                    self.net.load_state_dict(self.parents[-1].net.state_dict())
                except RuntimeError:
                    raise ConfigError(
                        "model.init_from_previous=true needs the same network shape as stage "
                        f"{self.stage - 1} (model.width, lrn, batch_norm)"
                    ) from None
        self.train_metrics, self.val_metrics = _pose_metrics(), _pose_metrics()
        self.test_metrics = nn.ModuleList([_pose_metrics() for _ in range(self.stage)])
        self._samples: dict[str, Any] | None = None
        self._test_samples: dict[str, Any] | None = None
        self._test_curves: list[tuple[np.ndarray, np.ndarray]] = []

    # ---- construction from the training config --------------------------------------------------
    @classmethod
    def from_config(cls, cfg: Any, data_info: dict[str, Any]) -> PoseTask:
        """Stage from the top-level `stage`; for stage > 1 the parent from `prev_ckpt` or discovery."""
        stage = cfg.get("stage", 1)
        if isinstance(stage, bool) or not isinstance(stage, int) or stage < 1:
            raise ConfigError(f"stage={stage!r} must be an integer >= 1")
        parents = parent_checkpoints(cfg, stage, data_info)
        return cls(**module_kwargs(cfg, data_info), stage=stage, parent_ckpts=parents)

    # ---- the cascade --------------------------------------------------------------------------
    def chain(self) -> list[ChainStage]:
        """Parents (stage 1 .. s-1) and this stage."""
        return [*self.parents, ChainStage(self.stage, self.net, self.sigma, self.min_crop)]

    def _parents_to(self, device: torch.device) -> None:
        for p in self.parents:
            if next(p.net.parameters()).device != device:
                p.net.to(device=device, memory_format=torch.channels_last)

    def initial(self, net: nn.Module, x: Tensor) -> Tensor:
        """Stage 1: normalised outputs -> pixels of the input frame (N, 14, 2)."""
        out = net(x).float()
        return denormalize_from_box(out, *self._frame(out.shape[0], out.device))

    def _frame(self, n: int, device: torch.device) -> tuple[Tensor, Tensor]:
        s = float(self.image_size)
        return torch.full((n, 2), s / 2, device=device), torch.full((n, 2), s, device=device)

    def crop_sides(self, estimate: Tensor, sigma: float, min_crop: float) -> Tensor:
        """Crop side per image (N,): sigma x torso diameter of `estimate`, at least min_crop x input."""
        return (sigma * torso_diameter(estimate.float())).clamp_min(min_crop * self.image_size)

    def refine(
        self, stage: ChainStage, x: Tensor, estimate: Tensor, centers: Tensor | None = None
    ) -> tuple[Tensor, Crops]:
        """Run refiner `stage` on crops of `x` around `centers` (default: `estimate`), (K, N, 14, 2)
        or (N, 14, 2), with sides from `estimate`; return its displacements (K*N*14, 2) and the crops."""
        n = estimate.shape[0]
        centers = estimate[None] if centers is None else centers.view(-1, n, NUM_JOINTS, 2)
        k = centers.shape[0]
        sides = self.crop_sides(estimate, stage.sigma, stage.min_crop)[None, :, None].expand(k, n, NUM_JOINTS)
        index = torch.arange(n, device=x.device)[None, :, None].expand(k, n, NUM_JOINTS)
        joint = torch.arange(NUM_JOINTS, device=x.device).expand(k, n, NUM_JOINTS)
        crops = crop_around(x, centers.reshape(-1, 2), sides.reshape(-1), self.image_size, index.reshape(-1))
        images = crops.images.contiguous(memory_format=torch.channels_last)
        disp = select_joints(stage.net(images), joint.reshape(-1)).float()
        return disp, crops

    def predict_chain(self, x: Tensor, upto: int | None = None) -> list[Tensor]:
        """Pixel estimates (N, 14, 2) after each stage 1 .. `upto` (default: this one)."""
        self._parents_to(x.device)
        stages = self.chain()[: upto or self.stage]
        preds = [self.initial(stages[0].net, x)]
        for stage in stages[1:]:
            disp, crops = self.refine(stage, x, preds[-1])
            preds.append(denormalize_from_box(disp, crops.box_center, crops.box_size).view_as(preds[-1]))
        return preds

    # ---- steps --------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        """Final pixel estimates (N, 14, 2) of the whole chain for normalised images x."""
        return self.predict_chain(x)[-1]

    def prepare_batch(self, batch: Any) -> Any:
        images, joints, visible = batch
        return self.normalize(images), joints.float(), visible.bool(), images

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, joints, visible, _ = batch
        if self.stage == 1:
            out = self.net(x).float()
            frame = self._frame(x.shape[0], x.device)
            loss = masked_l2(out, normalize_to_box(joints, *frame), visible)
            preds = denormalize_from_box(out.detach(), *frame)
        else:
            self._parents_to(x.device)
            with torch.no_grad():
                estimate = self.predict_chain(x, upto=self.stage - 1)[-1]
            simulated = simulated_centers(joints, estimate, self.err_mean, self.err_cov, self.simulated)
            centers = torch.cat([estimate[None], simulated])
            disp, crops = self.refine(self.chain()[-1], x, estimate, centers)
            k = centers.shape[0]
            target = normalize_to_box(joints.expand(k, -1, -1, -1).reshape(-1, 2), crops.box_center,
                                      crops.box_size)  # fmt: skip
            loss = masked_l2(disp, target, visible.expand(k, -1, -1).reshape(-1))
            real = slice(0, estimate.numel() // 2)  # the crops around the actual stage s-1 estimates
            preds = denormalize_from_box(disp[real].detach(), crops.box_center[real], crops.box_size[real])
            preds = preds.view_as(estimate)
        self.log_train_loss(loss, x.shape[0])
        for metric in self.train_metrics.values():
            metric.update(preds, joints, visible)
        return loss

    def _eval_step(self, batch: Any, split: str) -> list[Tensor]:
        x, joints, visible, _ = batch
        preds = self.predict_chain(x)
        if self.stage == 1:
            loss = masked_l2(normalize_to_box(preds[-1], *self._frame(x.shape[0], x.device)),
                             normalize_to_box(joints, *self._frame(x.shape[0], x.device)), visible)  # fmt: skip
        else:  # the refiner's own loss on the crops around the actual stage s-1 estimates
            side = self.crop_sides(preds[-2], self.sigma, self.min_crop)[:, None, None]
            loss = masked_l2((preds[-1] - preds[-2]) / side, (joints - preds[-2]) / side, visible)
        self.log(f"{split}/loss", loss, on_step=False, on_epoch=True)
        return preds

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        preds = self._eval_step(batch, "val")
        _, joints, visible, _ = batch
        for metric in self.val_metrics.values():
            metric.update(preds[-1], joints, visible)
        if batch_idx == 0:
            self._samples = self._keep_samples(batch, preds)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        preds = self._eval_step(batch, "test")
        _, joints, visible, _ = batch
        for metrics, p in zip(self.test_metrics, preds, strict=True):
            for metric in metrics.values():
                metric.update(p, joints, visible)
        if batch_idx == 0:
            self._test_samples = self._keep_samples(batch, preds)

    def _keep_samples(self, batch: Any, preds: list[Tensor]) -> dict[str, Any]:
        """The first images of the epoch (CPU copies, once per epoch) for the figures."""
        x, joints, visible, raw = batch
        n = min(NUM_SAMPLES, x.shape[0])
        kept = {
            "images": raw[:n].cpu().numpy(),
            "joints": joints[:n].cpu().numpy(),
            "visible": visible[:n].cpu().numpy(),
            "preds": [p[:n].detach().float().cpu().numpy() for p in preds],
        }
        if self.stage > 1:  # crops of the first image around its stage s-1 estimates
            stage = self.chain()[-1]
            disp, crops = self.refine(stage, x[:1], preds[-2][:1])
            info = self.hparams.get("data_info", {}) or {}
            kept["crops"] = crop_panels(
                crops, disp, preds[-2][0], joints[0], visible[0], info, self.image_size
            )
        return kept

    # ---- fitting the stage s-1 error distribution ------------------------------------------------
    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.stage > 1:
            self.fit_error_distribution()

    @torch.no_grad()
    def fit_error_distribution(self) -> None:
        """Mean and covariance per joint of (stage s-1 estimate - truth) / torso diameter(estimate)
        over the visible joints of the unaugmented training set."""
        datamodule = self.trainer.datamodule
        if datamodule is None or not isinstance(datamodule, PlainLoading):
            raise DataError(
                "stage > 1 training needs the LSPDataModule (to fit the stage s-1 error statistics)"
            )
        started = time.perf_counter()
        errors, weights = [], []
        with self.trainer.precision_plugin.forward_context():
            for images, joints, visible in datamodule.plain_dataloader("train"):
                images, joints = images.to(self.device), joints.to(self.device).float()
                estimate = self.predict_chain(self.normalize(images), upto=self.stage - 1)[-1].float()
                diameter = torso_diameter(estimate).clamp_min(1e-3)[:, None, None]
                errors.append((estimate - joints) / diameter)
                weights.append(visible.to(self.device).float())
        err, w = torch.cat(errors), torch.cat(weights)[..., None]  # (N, 14, 2), (N, 14, 1)
        mean, cov = error_statistics(err, w)
        self.err_mean.copy_(mean)
        self.err_cov.copy_(cov)
        spread = cov.diagonal(dim1=1, dim2=2).sqrt().mean().item()
        log.info("stage %d error statistics on %d training images (%.1fs): mean |bias| %.3f, std %.3f "
                 "torso diameters", self.stage - 1, err.shape[0], time.perf_counter() - started,
                 mean.norm(dim=-1).mean().item(), spread)  # fmt: skip

    # ---- epoch ends ---------------------------------------------------------------------------
    def _scalars(self, split: str) -> tuple[dict[str, float], PDJ]:
        metrics = self.train_metrics if split == "train" else self.val_metrics
        out = {f"{split}/{k}": v for k, v in metrics["pcp"].compute().items()}
        pdj = metrics["pdj"].compute()
        out.update({f"{split}/pdj@0.2": pdj["pdj@0.2"], f"{split}/pdj@0.5": pdj["pdj@0.5"]})
        return out, metrics["pdj"]

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        scalars, _ = self._scalars("train")
        for metric in self.train_metrics.values():
            metric.reset()
        self.log_dict(scalars)

    def on_validation_epoch_end(self) -> None:
        scalars, pdj = self._scalars("val")
        curve = [t.cpu().numpy() for t in pdj.curve(per_joint=True)]
        for metric in self.val_metrics.values():
            metric.reset()
        samples, self._samples = self._samples, None
        if self.trainer.sanity_checking:
            return
        self.log_dict(scalars)
        writer, step = self.tensorboard, self.current_epoch
        if writer is None:
            return
        writer.add_figure("val/pdj_curve", pdj_curve_figure([curve], [f"stage {self.stage}"]), step)
        if samples is not None:
            writer.add_figure("val/skeletons", skeleton_figure(samples, -1, f"stage {self.stage}"), step)
            if "crops" in samples:
                writer.add_figure("val/refiner_crops", crop_figure(samples["crops"]), step)

    def on_test_epoch_end(self) -> None:
        results: dict[str, float] = {}
        self._test_curves = []
        for k, metrics in enumerate(self.test_metrics, start=1):
            stage_results = reports.stage_scalars(metrics["pcp"], metrics["pdj"])
            results.update({f"test/stage{k}/{name}": v for name, v in stage_results.items()})
            if k == self.stage:
                results.update({f"test/{name}": v for name, v in stage_results.items()})
            self._test_curves.append(tuple(t.cpu().numpy() for t in metrics["pdj"].curve(per_joint=True)))
            for metric in metrics.values():
                metric.reset()
        self.test_results = results  # metrics.json: every stage, the last one also as test/*
        # TensorBoard: the last stage once (test/*), earlier stages of the chain by their number
        self.log_dict({k: v for k, v in results.items() if not k.startswith(f"test/stage{self.stage}/")})
        writer = self.tensorboard
        if writer is not None:
            writer.add_figure(
                "test/pdj_curve", pdj_curve_figure(self._test_curves, reports.stage_labels(self.stage))
            )
            if self._test_samples is not None:
                writer.add_figure(
                    "test/skeletons", skeleton_figure(self._test_samples, -1, f"stage {self.stage}")
                )

    # ---- evaluate.py output -------------------------------------------------------------------
    def write_report(self, out_dir: Path) -> None:
        """pdj_curve.png (one line per stage) and skeletons_stage<k>.png of the last test epoch."""
        reports.write_report(out_dir, self._test_curves, self._test_samples, self.stage)

    def report_tables(self) -> dict[str, Any]:
        """Limb groups and joints in table order, and the PDJ curve (mean over joints) after each stage."""
        return reports.report_tables(self._test_curves)

    def format_report(self) -> str:
        """PCP per limb group and PDJ per joint after each stage, side by side."""
        return reports.format_report(self.test_results, self.stage)


def _pose_metrics() -> nn.ModuleDict:
    return nn.ModuleDict({"pcp": PCP(), "pdj": PDJ()})
