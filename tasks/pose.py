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
  stage and the paths of its parents' checkpoints (stage 1 .. s-1), loaded with weights_only=True.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from datamodules.contract import PlainLoading
from datamodules.lsp_format import JOINT_NAMES
from tasks.base import TaskModule, module_kwargs, plain
from tasks.metrics.pose import LIMB_GROUPS, LIMBS, PCP, PDJ
from tasks.nets.deeppose import DeepPoseNet, select_joints
from tasks.pose_geometry import Crops, crop_around, denormalize_from_box, normalize_to_box, torso_diameter
from visionlab.checkpointing import read_task_checkpoint
from visionlab.errors import ConfigError, DataError
from visionlab.figures import plt, save_figure

log = logging.getLogger(__name__)
NUM_JOINTS = len(JOINT_NAMES)
#: how many validation / test images the skeleton figures show, and how many crops the refiner figure
NUM_SAMPLES = 8
NUM_CROPS = 6
GT_COLOR, PRED_COLOR, BEFORE_COLOR = "lime", "red", "yellow"
STAGE_COLORS = ("tab:orange", "tab:blue", "tab:red", "tab:purple", "tab:brown")


class ChainStage(NamedTuple):
    """One stage of the cascade as inference needs it."""

    stage: int
    net: DeepPoseNet
    sigma: float
    min_crop: float


def check_model(model: dict[str, Any]) -> tuple[float, float, int]:
    """Check `model.*` of a pose run; returns the refiners' (sigma, min_crop, simulated_per_joint)."""
    arch = model.get("arch", "deeppose")
    if arch != "deeppose":
        raise ConfigError(f"model.arch={arch!r} is not a pose model; expected 'deeppose'")
    width = model.get("width", 1.0)
    if isinstance(width, bool) or not isinstance(width, (int, float)) or width <= 0:
        raise ConfigError(
            f"model.width={width!r} must be a positive number (1.0 = the paper's AlexNet widths)"
        )
    sigma, min_crop = float(model.get("sigma", 1.0)), float(model.get("min_crop", 0.1))
    simulated = int(model.get("simulated_per_joint", 1))
    if sigma <= 0 or not 0 < min_crop <= 4 or simulated < 0:
        raise ConfigError(
            f"model.sigma={sigma} must be > 0, model.min_crop={min_crop} in (0, 4], "
            f"model.simulated_per_joint={simulated} >= 0"
        )
    return sigma, min_crop, simulated


def build_net(model: dict[str, Any], input_size: int) -> DeepPoseNet:
    """The DeepPose network of `model` (keys dropout, width, lrn, batch_norm) for `input_size` inputs."""
    check_model(model)
    try:
        return DeepPoseNet(
            NUM_JOINTS,
            float(model.get("dropout", 0.6)),
            input_size,
            bool(model.get("lrn", False)),
            float(model.get("width", 1.0)),
            bool(model.get("batch_norm", False)),
        )
    except ValueError as err:
        raise ConfigError(f"model: {err}") from None


def masked_l2(pred: Tensor, target: Tensor, visible: Tensor) -> Tensor:
    """Squared distance per joint, averaged over visible joints (no host sync: masks multiply)."""
    weight = visible.to(torch.float32)
    sq = (pred.float() - target.float()).square().sum(dim=-1)
    return (sq * weight).sum() / weight.sum().clamp_min(1.0)


class PoseTask(TaskModule):
    """DeepPose stage `stage` (1 = initial regressor, >1 = refiner) on LSP joints; see the module doc."""

    task_name = "pose"
    monitor = "val/pcp/mean"
    summary_metrics = ("test/pcp/mean", "test/pdj@0.2", "test/pdj@0.5")

    def __init__(
        self,
        model: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        data_info: dict[str, Any] | None = None,
        load_pretrained: bool = True,
        stage: int = 1,
        parent_ckpts: list[str] | None = None,
        load_parents: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["load_pretrained", "load_parents"])
        data_info = data_info or {}
        self.image_size = int(data_info.get("image_size", 220))
        self.stage = int(stage)
        parent_ckpts = [str(p) for p in parent_ckpts or []]
        if self.stage < 1:
            raise ConfigError(f"stage={stage}: expected 1 (initial regressor) or more (refiners)")
        if len(parent_ckpts) != self.stage - 1:
            raise ConfigError(f"stage={stage} needs {self.stage - 1} parent checkpoints, got {parent_ckpts}")
        self.sigma, self.min_crop, self.simulated = check_model(model)
        self.net = build_net(model, self.image_size)
        # Parents are frozen and kept out of the state dict (a plain list, not submodules): the
        # checkpoint holds this stage's weights only and names its parents' files.
        self.parents: list[ChainStage] = load_chain(parent_ckpts) if load_parents else []
        if self.stage > 1:
            # stage s-1 error distribution per joint, normalised by the torso diameter of its estimate
            self.register_buffer("err_mean", torch.zeros(NUM_JOINTS, 2))
            self.register_buffer("err_cov", torch.eye(2).repeat(NUM_JOINTS, 1, 1) * 0.01)
            if load_pretrained and model.get("init_from_previous", False) and self.parents:
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
    def check_config(cls, cfg: Any) -> None:
        """`model.*` before data is loaded (the stage's parent checkpoint needs the data: checked later)."""
        check_model(plain(cfg.model))

    @classmethod
    def from_config(cls, cfg: Any, data_info: dict[str, Any]) -> PoseTask:
        """Stage from the top-level `stage`; for stage > 1 the parent from `prev_ckpt` or discovery."""
        stage = cfg.get("stage", 1)
        if isinstance(stage, bool) or not isinstance(stage, int) or stage < 1:
            raise ConfigError(f"stage={stage!r} must be an integer >= 1")
        parents: list[str] = []
        if stage > 1:
            resumed = _resumed_parents(cfg, stage)
            if resumed is not None:  # resuming: keep the cascade the run started with
                return cls(**module_kwargs(cfg, data_info), stage=stage, parent_ckpts=resumed)
            prev = resolve_previous_stage(cfg, stage, data_info)
            hp = read_hparams(prev)
            if hp.get("stage") != stage - 1:
                raise ConfigError(f"prev_ckpt={prev} is a stage-{hp.get('stage')} checkpoint; stage={stage} "
                                  f"needs a stage-{stage - 1} one")  # fmt: skip
            prev_info = hp.get("data_info") or {}
            if prev_info.get("image_size") != data_info.get("image_size"):
                raise ConfigError(
                    f"prev_ckpt={prev} was trained at data.image_size={prev_info.get('image_size')}, this run "
                    f"uses {data_info.get('image_size')}; every stage of a cascade needs the same size"
                )
            if prev_info.get("root") != data_info.get("root"):
                log.warning("prev_ckpt=%s was trained on %s, this run uses %s", prev, prev_info.get("root"),
                            data_info.get("root"))  # fmt: skip
            parents = [*hp.get("parent_ckpts", []), str(prev)]
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
            centers = torch.cat([estimate[None], self.simulated_centers(joints, estimate)])
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

    def simulated_centers(self, joints: Tensor, estimate: Tensor) -> Tensor:
        """(K, N, 14, 2): truth + torso diameter(estimate) x d, d ~ N(err_mean_i, err_cov_i) per joint."""
        k = self.simulated
        n = joints.shape[0]
        if k == 0:
            return joints.new_zeros(0, n, NUM_JOINTS, 2)
        with torch.autocast(joints.device.type, enabled=False):  # full precision for the sampling
            chol = torch.linalg.cholesky_ex(self.err_cov.float())[0]  # (14, 2, 2); _ex: no host sync
            z = torch.randn(k, n, NUM_JOINTS, 2, device=joints.device)
            d = self.err_mean.float() + torch.einsum("jab,knjb->knja", chol, z)
            return joints[None] + torso_diameter(estimate.float())[None, :, None, None] * d

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
            kept["crops"] = self._crop_panels(crops, disp, preds[-2][0], joints[0], visible[0])
        return kept

    def _crop_panels(
        self, crops: Crops, disp: Tensor, before: Tensor, truth: Tensor, visible: Tensor
    ) -> dict:
        """uint8 crops with the before (crop centre), after and true positions in crop pixels."""
        order = [j for j in range(NUM_JOINTS) if bool(visible[j])][:NUM_CROPS] or list(range(NUM_CROPS))
        info = self.hparams.get("data_info", {}) or {}
        mean = torch.as_tensor(info.get("mean", [0.0, 0.0, 0.0]), device=disp.device).view(1, 3, 1, 1)
        std = torch.as_tensor(info.get("std", [1.0, 1.0, 1.0]), device=disp.device).view(1, 3, 1, 1)
        images = ((crops.images[order].float() * std + mean) * 255).clamp(0, 255).byte()
        s = self.image_size

        def to_crop(points: Tensor) -> np.ndarray:
            norm = normalize_to_box(points, crops.box_center[order], crops.box_size[order])
            return ((norm + 0.5) * s).cpu().numpy()

        return {
            "images": images.permute(0, 2, 3, 1).cpu().numpy(),
            "joints": order,
            "before": to_crop(before[order]),
            "after": ((disp[order] + 0.5) * s).cpu().numpy(),
            "truth": to_crop(truth[order]),
        }

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
        count = w.sum(dim=0)  # (14, 1)
        mean = (err * w).sum(dim=0) / count.clamp_min(1.0)
        centred = (err - mean) * w.sqrt()
        cov = torch.einsum("nja,njb->jab", centred, centred) / (count[:, :, None] - 1).clamp_min(1.0)
        cov = cov + 1e-4 * torch.eye(2, device=cov.device)  # keep it positive definite
        few = count[:, 0] < 3
        if bool(few.all()):
            raise DataError(
                "too few visible joints in the training set to fit the stage s-1 error statistics"
            )
        if bool(few.any()):  # joints seen fewer than 3 times borrow the pooled statistics
            mean[few], cov[few] = mean[~few].mean(dim=0), cov[~few].mean(dim=0)
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
            stage_results = stage_scalars(metrics["pcp"], metrics["pdj"])
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
            writer.add_figure("test/pdj_curve", pdj_curve_figure(self._test_curves, self._stage_labels()))
            if self._test_samples is not None:
                writer.add_figure(
                    "test/skeletons", skeleton_figure(self._test_samples, -1, f"stage {self.stage}")
                )

    def _stage_labels(self) -> list[str]:
        return [f"stage {k}" for k in range(1, self.stage + 1)]

    # ---- evaluate.py output -------------------------------------------------------------------
    def write_report(self, out_dir: Path) -> None:
        """pdj_curve.png (one line per stage) and skeletons_stage<k>.png of the last test epoch."""
        if not self._test_curves:
            return
        save_figure(pdj_curve_figure(self._test_curves, self._stage_labels()), out_dir / "pdj_curve.png")
        if self._test_samples is not None:
            for k in range(1, self.stage + 1):
                fig = skeleton_figure(self._test_samples, k - 1, f"stage {k}")
                save_figure(fig, out_dir / f"skeletons_stage{k}.png")
            if "crops" in self._test_samples:
                save_figure(
                    crop_figure(self._test_samples["crops"]), out_dir / f"refiner_crops_stage{self.stage}.png"
                )

    def report_tables(self) -> dict[str, Any]:
        """Limb groups and joints in table order, and the PDJ curve (mean over joints) after each stage."""
        curves = [
            {"stage": k, "fractions": frac.tolist(), "pdj": np.nanmean(rates, axis=1).tolist()}
            for k, (frac, rates) in enumerate(self._test_curves, start=1)
        ]
        return {"limb_groups": list(LIMB_GROUPS), "joints": list(JOINT_NAMES), "pdj_curves": curves}

    def format_report(self) -> str:
        """PCP per limb group and PDJ per joint after each stage, side by side."""
        r = self.test_results
        if not r:
            return "validation metrics of the last stage only (split=val): see metrics.json"
        stages = range(1, self.stage + 1)
        head = "".join(f"  stage {k:<3d}" for k in stages)

        def row(label: str, key: str) -> str:
            return f"{label:<24}" + "".join(
                f"  {r.get(f'test/stage{k}/{key}', float('nan')):9.4f}" for k in stages
            )

        lines = [f"{'PCP (strict, 0.5)':<24}{head}"]
        lines += [row(g, f"pcp/{g}") for g in LIMB_GROUPS]
        lines += [row("mean (arms + legs)", "pcp/mean"), row("mean (all groups)", "pcp/mean_all"), ""]
        for frac in ("0.2", "0.5"):
            lines.append(f"{f'PDJ@{frac} per joint':<24}{head}")
            lines += [row(name, f"pdj@{frac}/{name}") for name in JOINT_NAMES]
            lines += [row("mean", f"pdj@{frac}"), ""]
        return "\n".join(lines).rstrip()


# ---- helpers ---------------------------------------------------------------------------------------


def _pose_metrics() -> nn.ModuleDict:
    return nn.ModuleDict({"pcp": PCP(), "pdj": PDJ()})


def stage_scalars(pcp: PCP, pdj: PDJ) -> dict[str, float]:
    """PCP per group and means, PDJ@0.2 / @0.5 mean and per joint, as python floats."""
    out = {k: float(v) for k, v in pcp.compute().items()}
    headline = pdj.compute()
    fractions, rates = pdj.curve(per_joint=True)
    for frac in (0.2, 0.5):
        out[f"pdj@{frac}"] = float(headline[f"pdj@{frac}"])
        row = rates[int((fractions - frac).abs().argmin())]
        out.update({f"pdj@{frac}/{name}": float(row[j]) for j, name in enumerate(JOINT_NAMES)})
    return out


def read_hparams(path: Path) -> dict[str, Any]:
    """The hyperparameters of a pose checkpoint (memory-mapped: the weights are not read)."""
    state = read_task_checkpoint(path, "pose", mmap=True, error=ConfigError, detail="")
    return dict(state.get("hyper_parameters", {}))


def _resumed_parents(cfg: Any, stage: int) -> list[str] | None:
    """The parents stored in the checkpoint a run resumes from (`ckpt_path`), unless prev_ckpt is given."""
    resume = cfg.get("ckpt_path")
    if cfg.get("prev_ckpt") or not resume or not Path(str(resume)).expanduser().is_file():
        return None
    hp = read_hparams(Path(str(resume)).expanduser())
    if hp.get("stage") != stage:
        raise ConfigError(
            f"ckpt_path={resume} is a stage-{hp.get('stage')} checkpoint; this run is stage={stage}"
        )
    return list(hp.get("parent_ckpts", []))


def resolve_previous_stage(cfg: Any, stage: int, data_info: dict[str, Any]) -> Path:
    """`prev_ckpt` if given; else the newest finished stage s-1 run on the same data under
    `${paths.output_dir}/pose/*/checkpoints/best.ckpt` (finished = its run folder has metrics.json)."""
    given = cfg.get("prev_ckpt")
    if given:
        path = Path(str(given)).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(
                f"prev_ckpt={given} is not a file; give the stage-{stage - 1} <run>/checkpoints/best.ckpt"
            )
        return path
    outputs = Path(str(cfg.paths.output_dir)).expanduser().resolve()
    found: list[tuple[float, Path]] = []
    for ckpt in outputs.glob("pose/*/checkpoints/best.ckpt"):
        done = ckpt.parent.parent / "metrics.json"
        if not done.is_file():
            continue
        try:
            hp = read_hparams(ckpt)
        except ConfigError:
            continue
        info = hp.get("data_info") or {}
        if (
            hp.get("stage") == stage - 1
            and info.get("root") == data_info.get("root")
            and (info.get("image_size") == data_info.get("image_size"))
        ):
            found.append((done.stat().st_mtime, ckpt))
    if not found:
        raise ConfigError(
            f"stage={stage} needs a stage-{stage - 1} checkpoint: none given (prev_ckpt=null) and no finished "
            f"stage-{stage - 1} run on {data_info.get('root')} at image_size {data_info.get('image_size')} under "
            f"{outputs}/pose/*/checkpoints/best.ckpt. Train it first (python train.py task=pose "
            f"stage={stage - 1}) or pass prev_ckpt=<run>/checkpoints/best.ckpt"
        )
    chosen = max(found)[1]
    message = f"stage {stage}: using the stage-{stage - 1} checkpoint {chosen} (newest of {len(found)} found)"
    print(message)  # on stdout, not the log: Hydra would echo a log record to the console a second time
    return chosen


def load_chain(paths: list[str]) -> list[ChainStage]:
    """Load the parent checkpoints (stage 1 .. s-1) with weights_only=True, frozen, in eval mode."""
    chain = []
    for k, path in enumerate(paths, start=1):
        if not Path(path).is_file():
            raise ConfigError(
                f"parent checkpoint {path} (stage {k} of this cascade) is missing; the cascade needs every "
                "earlier stage's checkpoint at the path stored in the later one"
            )
        parent = PoseTask.load_from_checkpoint(
            path, map_location="cpu", weights_only=True, load_pretrained=False, load_parents=False
        )
        if parent.stage != k:
            raise ConfigError(
                f"{path} is a stage-{parent.stage} checkpoint, expected stage {k} of the cascade"
            )
        net = parent.net.eval().requires_grad_(False)
        chain.append(ChainStage(k, net, parent.sigma, parent.min_crop))
    return chain


# ---- figures ---------------------------------------------------------------------------------------


def _draw_skeleton(ax: Any, joints: np.ndarray, visible: np.ndarray | None, color: str, style: str) -> None:
    for limb in LIMBS:
        ends = (list(limb.a), list(limb.b))
        if visible is not None and not all(visible[e].all() for e in ends):
            continue
        a, b = (joints[e].mean(axis=0) for e in ends)
        ax.plot([a[0], b[0]], [a[1], b[1]], style, color=color, lw=1.6)
    shown = joints if visible is None else joints[visible]
    ax.scatter(shown[:, 0], shown[:, 1], s=6, color=color, zorder=3)


def skeleton_figure(samples: dict[str, Any], stage_index: int, label: str) -> Any:
    """Images with the ground truth (green, visible limbs only) and the predicted skeleton (red, dashed)."""
    images = samples["images"]
    n = len(images)
    cols = min(4, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    preds = samples["preds"][stage_index]
    for i, ax in enumerate(axes.flat[:n]):
        ax.imshow(images[i])
        _draw_skeleton(ax, samples["joints"][i], samples["visible"][i], GT_COLOR, "-")
        _draw_skeleton(ax, preds[i], None, PRED_COLOR, "--")
        ax.set_xlim(0, images[i].shape[1])
        ax.set_ylim(images[i].shape[0], 0)
    fig.suptitle(f"ground truth (green) vs {label} prediction (red, dashed)", fontsize=9)
    fig.tight_layout()
    return fig


def crop_figure(crops: dict[str, Any]) -> Any:
    """Refiner crops: stage s-1 estimate (yellow x, the crop centre), refined (red o), truth (green +);
    a point outside the crop is drawn on its border as a triangle."""
    n = len(crops["images"])
    fig, axes = plt.subplots(1, n, figsize=(2.0 * n, 2.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        size = crops["images"][i].shape[0]
        ax.imshow(crops["images"][i], extent=(0, size, size, 0))
        for key, marker, color in (
            ("before", "x", BEFORE_COLOR),
            ("after", "o", PRED_COLOR),
            ("truth", "+", GT_COLOR),
        ):
            point = np.asarray(crops[key][i], dtype=float)
            clipped = np.clip(point, 1, size - 1)
            outside = not np.allclose(point, clipped)
            ax.scatter(*clipped, marker="^" if outside else marker, s=60, color=color, linewidths=2,
                       facecolors="none" if marker == "o" and not outside else None)  # fmt: skip
        ax.set_xlim(0, size)
        ax.set_ylim(size, 0)
        ax.set_title(JOINT_NAMES[crops["joints"][i]], fontsize=8)
        ax.axis("off")
    fig.suptitle(
        "before (yellow x) -> after (red o), truth (green +); triangle = outside the crop", fontsize=9
    )
    fig.tight_layout()
    return fig


def pdj_curve_figure(curves: list[tuple[np.ndarray, np.ndarray]], labels: list[str]) -> Any:
    """PDJ (mean over joints) against the fraction of the torso diameter, one line per stage;
    per-joint curves of the last stage in thin grey."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    fractions, per_joint = curves[-1]
    for j in range(per_joint.shape[1]):
        ax.plot(fractions, per_joint[:, j], color="0.8", lw=0.6)
    for (frac, rates), label, color in zip(curves, labels, STAGE_COLORS, strict=False):
        ax.plot(frac, np.nanmean(rates, axis=1), lw=2, label=label, color=color)
    ax.set_xlabel("normalised distance to truth (fraction of torso diameter)")
    ax.set_ylabel("detection rate (PDJ)")
    ax.set_xlim(0, float(fractions[-1]))
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("PDJ curve (grey: each joint, last stage)")
    fig.tight_layout()
    return fig
