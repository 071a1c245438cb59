"""`defect`: a convolutional autoencoder learns good images only; the anomaly map is |x - x_hat|.

Training minimises the reconstruction loss (MSE, or 1 - SSIM) on good images. Validation follows the
reconstruction loss of its good images and fits the decision thresholds; when it holds defective images
(`data.val_defect_fraction`) it also reports the detection metrics every epoch. Test applies the
thresholds fitted on validation (stored as buffers, so they travel with every checkpoint) and reports
the reference's pixel scores and the standard metrics (see `tasks.defect_eval` and docs/defect.md).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torchmetrics.functional.image import structural_similarity_index_measure

from datamodules.contract import DescribedData
from tasks.base import TaskModule, module_kwargs, plain
from tasks.defect_eval import (
    STANDARD,
    DefectEvaluation,
    MaskedMean,
    check_settings,
    example_rows_figure,
    metric_table_markdown,
    pr_curve_counts,
    pr_figure,
    quantile_threshold,
    reference_table_markdown,
)
from tasks.metrics.anomaly import f1_optimal_threshold, image_scores
from tasks.nets.autoencoder import ConvAutoencoder, anomaly_map
from visionlab.errors import ConfigError
from visionlab.figures import save_figure

log = logging.getLogger(__name__)
LOSSES = ("mse", "ssim")
#: `model.arch` of the defect task's network
ARCH = "autoencoder"
#: model config keys passed to ConvAutoencoder (the rest: `loss`, `arch`)
NET_KEYS = (
    "in_channels",
    "input_size",
    "channels",
    "bottleneck",
    "activation",
    "batch_norm",
    "out_activation",
    "extra_layers",
    "dropout",
)


def check_model(model: dict[str, Any], image_size: int | None) -> str:
    """Check `model.*` against the autoencoder's settings and `data.image_size`; returns the loss name."""
    if model.get("arch", ARCH) != ARCH:
        raise ConfigError(f"model.arch={model.get('arch')!r} is not a defect model; expected {ARCH!r}")
    loss = str(model.get("loss", "mse"))
    if loss not in LOSSES:
        raise ConfigError(f"model.loss={loss!r}: expected one of {list(LOSSES)}")
    unknown = sorted(set(model) - {*NET_KEYS, "loss", "arch"})
    if unknown:
        raise ConfigError(f"model.{unknown[0]} is not an autoencoder setting; expected {sorted(NET_KEYS)}")
    size = model.get("input_size", 128)
    if image_size not in (None, size):
        raise ConfigError(
            f"model.input_size={size} but data.image_size={image_size}; they must match "
            "(conf/task/defect.yaml sets data.image_size: ${model.input_size})"
        )
    return loss


class DefectTask(TaskModule):
    """Autoencoder anomaly detection. `metrics` holds the evaluation settings (`tasks.defect_eval`)."""

    task_name = "defect"
    monitor = "val/loss"
    summary_metrics = ("test/image_auroc", "test/pixel_auroc", "test/aupro", "test/pixel_ap")

    def __init__(
        self,
        model: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        data_info: dict[str, Any] | None = None,
        load_pretrained: bool = True,
        metrics: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["load_pretrained"])
        data_info = data_info or {}
        self.defect_types: list[str] = list(data_info.get("defect_types", []))
        self.val_has_defects = bool(data_info.get("val_has_defects", False))
        self.settings = check_settings(metrics)
        self.loss_kind = check_model(model, data_info.get("image_size"))
        try:
            self.net = ConvAutoencoder(**{k: model[k] for k in NET_KEYS if k in model})
        except ConfigError as err:
            raise ConfigError(f"model.{err}") from None
        self.val_loss, self.test_loss = MaskedMean(), MaskedMean()
        # Validation without defective images measures good images only ("all" group, for the quantiles).
        self.val_eval = DefectEvaluation(self.defect_types if self.val_has_defects else [], self.settings)
        self.test_eval: DefectEvaluation | None = None
        # Thresholds fitted on validation; buffers, so the checkpoint of an epoch carries that epoch's fit.
        self.register_buffer("pixel_threshold", torch.tensor(float("nan"), dtype=torch.float64))
        self.register_buffer("image_threshold", torch.tensor(float("nan"), dtype=torch.float64))
        # 1 = F1-optimal on validation defects, 0 = quantile of validation good scores, NaN = not fitted
        self.register_buffer("threshold_from_defects", torch.tensor(float("nan"), dtype=torch.float64))
        # Per-pixel error statistics of the good training images (metrics.normalize=zscore), summed over
        # each training epoch from the training steps' own reconstructions and fixed at validation start.
        size = int(model.get("input_size", 128))
        self.register_buffer("error_mean", torch.zeros(size, size))
        self.register_buffer("error_std", torch.ones(size, size))
        self.register_buffer("error_count", torch.zeros((), dtype=torch.float64))
        self._error_sums: list[torch.Tensor] | None = None
        self._types_cpu: list[int] = []
        self._examples: dict[str, list[dict[str, Any]]] = {}
        self._report: dict[str, Any] = {}

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """`model.*` and `metrics.*` (thresholds, image score, ...) before data is loaded."""
        check_model(plain(cfg.model), cfg.data.get("image_size"))
        check_settings(plain(cfg.get("metrics")))

    @classmethod
    def from_config(cls, cfg: Any, data_info: dict[str, Any]) -> DefectTask:
        return cls(**module_kwargs(cfg, data_info), metrics=plain(cfg.get("metrics")))

    def configure_evaluation(self, cfg: Any) -> None:
        """evaluate.py may change what is reported (reference thresholds, AU-PRO limit, bins, examples);
        the image score stays the checkpoint's, since the image threshold was fitted on it."""
        given = cfg.get("metrics")
        if given is None:
            return
        given = OmegaConf.to_container(given, resolve=True)
        keep = {k: self.settings[k] for k in ("image_score", "smooth_sigma", "normalize", "image_bins")}
        self.settings = check_settings({**self.settings, **given, **keep})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    # ---- steps ---------------------------------------------------------------------------------------
    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Type indices as a host list, read before the transfer: group selection then needs no sync.
        self._types_cpu = batch[2].tolist()
        return batch

    def prepare_batch(self, batch: Any) -> Any:
        images, masks, types = batch
        return self.normalize(images), masks.bool(), types, images

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = batch[0]
        x_hat = self(x)
        loss = per_sample_loss(x, x_hat, self.loss_kind).mean()
        if self.settings["normalize"] == "zscore":
            self._add_error_stats(anomaly_map(x.float(), x_hat.detach().float()))
        self.log_train_loss(loss, x.shape[0])
        return loss

    def _add_error_stats(self, maps: torch.Tensor) -> None:
        maps = maps.double()
        sums = [maps.new_tensor(float(len(maps))), maps.sum(0), maps.pow(2).sum(0)]
        if self._error_sums is None:
            self._error_sums = sums
        else:
            self._error_sums = [a + b for a, b in zip(self._error_sums, sums, strict=True)]

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._error_sums = None

    def on_validation_epoch_start(self) -> None:
        """Fix this epoch's good-image error statistics (all processes' sums) before validation scores."""
        if self._error_sums is None:
            return
        n, total, squares = (self.trainer.strategy.reduce(t, reduce_op="sum") for t in self._error_sums)
        self._error_sums = None
        mean = total / n
        std = (squares / n - mean.pow(2)).clamp(min=0).sqrt()
        # Floor: a tenth of the average std, so near-constant pixels (the background) cannot blow up.
        std = std + 0.1 * std.mean() + 1e-6
        self.error_mean.copy_(mean.float())
        self.error_std.copy_(std.float())
        self.error_count.fill_(float(n))

    def _scores(self, maps: torch.Tensor) -> torch.Tensor:
        use = self.settings["normalize"] == "zscore" and float(self.error_count) > 0
        return image_scores(
            maps,
            self.settings["image_score"],
            self.settings["smooth_sigma"],
            self.error_mean if use else None,
            self.error_std if use else None,
        )

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, self.val_eval, self.val_loss, per_type=1)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        assert self.test_eval is not None
        self._eval_step(batch, self.test_eval, self.test_loss, per_type=self.settings["examples"])

    def _eval_step(self, batch: Any, evaluation: DefectEvaluation, loss: MaskedMean, per_type: int) -> None:
        x, masks, types, raw = batch
        x_hat = self(x).float()
        x = x.float()
        loss.update(per_sample_loss(x, x_hat, self.loss_kind), (types == 0).double())
        maps = anomaly_map(x, x_hat)
        scores = self._scores(maps)
        evaluation.update(maps, masks, types, self._types_cpu, scores)
        self._keep_examples(raw, x_hat, maps, masks, evaluation.type_names, per_type)

    def _keep_examples(
        self,
        raw: torch.Tensor,
        x_hat: torch.Tensor,
        maps: torch.Tensor,
        masks: torch.Tensor,
        type_names: list[str],
        per_type: int,
    ) -> None:
        """Keep the first `per_type` images of each type for the figures (a bounded, small copy)."""
        rows = []
        for i, t in enumerate(self._types_cpu):
            name = type_names[t] if t < len(type_names) else str(t)
            kept = self._examples.setdefault(name, [])
            if len(kept) + sum(1 for _, n in rows if n == name) < per_type:
                rows.append((i, name))
        if not rows:
            return
        index = torch.tensor([i for i, _ in rows], device=raw.device)
        images = raw[index].cpu().numpy()
        recon = (x_hat[index].clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        heat = maps[index].float().cpu().numpy()
        truth = masks[index].cpu().numpy()
        for j, (_, name) in enumerate(rows):
            self._examples[name].append(
                {"image": images[j], "recon": recon[j], "map": heat[j], "mask": truth[j], "label": name}
            )

    # ---- validation: thresholds and the per-epoch table ------------------------------------------------
    def on_validation_epoch_end(self) -> None:
        self.log("val/loss", self.val_loss.compute().float())
        self.val_loss.reset()
        examples, self._examples = self._examples, {}
        if self.trainer.sanity_checking:
            self.val_eval.reset()
            return
        results = self.val_eval.compute()
        self._fit_thresholds()
        overall = self.val_eval.groups["all"]
        logged = {
            "val/pixel_threshold": float(self.pixel_threshold),
            "val/image_threshold": float(self.image_threshold),
        }
        if self.val_has_defects:
            precision, recall, thresholds = overall.pixel_ap.precision_recall_curve()
            logged["val/pixel_f1"] = f1_optimal_threshold(precision, recall, thresholds)[1]
            logged["val/image_f1"] = f1_optimal_threshold(*overall.image_ap.precision_recall_curve())[1]
            for group, values in results["groups"].items():
                prefix = "val" if group == "all" else f"val/{group}"
                logged.update({f"{prefix}/{k}": v for k, v in values.items()})
        self.log_dict({k: v for k, v in logged.items() if math.isfinite(v)})
        writer, step = self.tensorboard, self.current_epoch
        if writer is not None:
            rows = [row for name in self.val_eval.type_names for row in examples.get(name, [])]
            writer.add_figure(
                "val/examples",
                example_rows_figure(
                    rows, float(self.pixel_threshold), self._vmax(), f"validation, epoch {step}"
                ),
                step,
            )
            if self.val_has_defects:
                writer.add_text("val/metric_table", metric_table_markdown(results["groups"]), step)
                writer.add_text("val/reference_table", reference_table_markdown(results["table"]), step)
                writer.add_pr_curve_raw(
                    "val/pixel_pr_curve", **pr_curve_counts(overall.pixel_ap), global_step=step
                )
        self._report = {"stage": "val", "results": results, "examples": examples}
        self.val_eval.reset()

    def _fit_thresholds(self) -> None:
        """Pixel and image thresholds from this validation epoch: F1-optimal when validation has defective
        images, otherwise the `fallback_quantile` of the good images' pixel / image scores."""
        overall = self.val_eval.groups["all"]
        # The histograms of all processes (DDP), read directly: sync_context is a no-op in one process.
        with overall.pixel_ap.sync_context(), overall.image_ap.sync_context():
            if self.val_has_defects:
                pixel, _ = f1_optimal_threshold(*overall.pixel_ap.precision_recall_curve())
                image, _ = f1_optimal_threshold(*overall.image_ap.precision_recall_curve())
                from_defects = 1.0
            else:
                q = self.settings["fallback_quantile"]
                pixel = quantile_threshold(overall.pixel_ap.hist[0], q, overall.pixel_ap.score_range)
                image = quantile_threshold(overall.image_ap.hist[0], q, overall.image_ap.score_range)
                from_defects = 0.0
        self.pixel_threshold.fill_(pixel)
        self.image_threshold.fill_(image)
        self.threshold_from_defects.fill_(from_defects)

    # ---- test ------------------------------------------------------------------------------------------
    def on_test_start(self) -> None:
        """Metrics for the defect types of the data under test (they may differ from training's), with
        counters at the thresholds fitted on validation."""
        types = self.defect_types
        datamodule = getattr(self.trainer, "datamodule", None)
        if isinstance(datamodule, DescribedData):
            types = list(datamodule.info().get("defect_types", types))
        self.test_eval = DefectEvaluation(types, self.settings).to(self.device)
        if not math.isfinite(float(self.pixel_threshold)):
            log.warning("no threshold was fitted on validation (no validation epoch ran): P/R/F1 are NaN")
        self.test_eval.set_thresholds(float(self.pixel_threshold), float(self.image_threshold))
        self._examples = {}

    def on_test_epoch_end(self) -> None:
        assert self.test_eval is not None
        results = self.test_eval.compute()
        self.test_results = self._flatten(results)
        # The reference table goes to metrics.json and a TensorBoard text table, not 80 more scalars.
        self.log_dict({k: v for k, v in self.test_results.items() if not k.startswith("test/ref/")})
        writer = self.tensorboard
        if writer is not None:
            threshold = float(self.pixel_threshold)
            for name in self.test_eval.type_names:
                if self._examples.get(name):
                    figure = example_rows_figure(
                        self._examples[name], threshold, self._vmax(), f"test: {name}"
                    )
                    writer.add_figure(f"test/examples/{name}", figure)
            # the figure and the raw curve need their own tags: TensorBoard shows neither when they share one
            writer.add_figure("test/pixel_pr_curves_by_type", self._pr_figure())
            writer.add_pr_curve_raw(
                "test/pixel_pr_curve", **pr_curve_counts(self.test_eval.groups["all"].pixel_ap)
            )
            writer.add_text(
                "test/metric_table", metric_table_markdown(results["groups"], self._pixel_prf(results))
            )
            writer.add_text("test/reference_table", reference_table_markdown(results["table"]))
        self._report = {
            "stage": "test",
            "results": results,
            "examples": self._examples,
            "pr_figure": self._pr_figure,
        }
        self._examples = {}

    def _flatten(self, results: dict[str, Any]) -> dict[str, float]:
        out = {
            "test/loss": float(self.test_loss.compute()),
            "test/pixel_threshold": float(self.pixel_threshold),
            "test/image_threshold": float(self.image_threshold),
            "test/threshold_from_val_defects": float(self.threshold_from_defects),
        }
        self.test_loss.reset()
        for group, values in results["groups"].items():
            prefix = "test" if group == "all" else f"test/{group}"
            out.update({f"{prefix}/{k}": v for k, v in values.items()})
        for level, by_group in results["at_threshold"].items():
            for group, values in by_group.items():
                prefix = "test" if group == "all" else f"test/{group}"
                out.update({f"{prefix}/{level}_{k}": v for k, v in values.items()})
        for name, by_threshold in results["table"].items():
            for threshold, scores in by_threshold.items():
                out.update({f"test/ref/{name}/{threshold:g}/{k}": v for k, v in scores.items()})
        return out

    @staticmethod
    def _pixel_prf(results: dict[str, Any]) -> dict[str, Any] | None:
        return results["at_threshold"].get("pixel")

    def _vmax(self) -> float:
        """Heat maps are drawn from 0 to the largest reference threshold (or twice the fitted one)."""
        fitted = float(self.pixel_threshold)
        return max(max(self.settings["thresholds"]), 2 * fitted if math.isfinite(fitted) else 0.0)

    def _pr_figure(self) -> Any:
        assert self.test_eval is not None
        curves = {}
        for name, group in self.test_eval.groups.items():
            precision, recall, _ = group.pixel_ap.precision_recall_curve()
            ap = float(group.pixel_ap.compute()) if group.pixel_ap.hist[1].sum() > 0 else float("nan")
            curves[name] = (precision.numpy(), recall.numpy(), ap)
        point = None
        prf = self.test_results
        if math.isfinite(prf.get("test/pixel_recall", float("nan"))):
            point = (prf["test/pixel_recall"], prf["test/pixel_precision"], float(self.pixel_threshold))
        return pr_figure(curves, point)

    # ---- evaluate.py output ----------------------------------------------------------------------------
    def write_report(self, out_dir: Path) -> None:
        """examples_<type>.png (input / reconstruction / heat map / truth / thresholded mask) per type,
        and pixel_pr_curve.png, of the last test epoch."""
        if not self._report:
            return
        threshold = float(self.pixel_threshold)
        for name, rows in self._report["examples"].items():
            if rows:
                figure = example_rows_figure(
                    rows, threshold, self._vmax(), f"{self._report['stage']}: {name}"
                )
                save_figure(figure, out_dir / f"examples_{name}.png")
        if "pr_figure" in self._report:
            save_figure(self._report["pr_figure"](), out_dir / "pixel_pr_curve.png")

    def report_tables(self) -> dict[str, Any]:
        """The metric settings (reference thresholds, image score, AU-PRO limit) and where the fitted
        pixel / image thresholds came from."""
        return {"settings": dict(self.settings), "threshold_source": self.threshold_source()}

    def threshold_source(self) -> str:
        """How the thresholds used at test time were fitted on validation."""
        flag = float(self.threshold_from_defects)
        if flag == 1.0:
            return "F1-optimal on validation defects"
        if flag == 0.0:
            return f"{self.settings['fallback_quantile']:g} quantile of validation good scores"
        return "not fitted (no validation epoch ran)"

    def format_report(self) -> str:
        """The reference's table (per type x threshold: recall, precision, accuracy), then the standard
        metrics per type, then precision / recall / F1 at the thresholds fitted on validation."""
        if not self._report:
            return "(no results)"
        results = self._report["results"]
        lines = [
            "Reference pixel scores: a pixel is predicted defective when |x - x_hat| >= threshold.",
            "  recall = |fault ∩ pred| / |fault|  precision = |fault ∩ pred| / |pred|  "
            "accuracy = pixels where pred = truth / all pixels  (per type: that type's images only)",
            "",
            f"{'type':<12} {'threshold':>9} {'recall':>8} {'precision':>9} {'accuracy':>8}",
        ]
        for name, by_threshold in results["table"].items():
            for threshold, s in by_threshold.items():
                lines.append(
                    f"{name:<12} {threshold:>9g} {_f(s['recall']):>8} {_f(s['precision']):>9} {_f(s['accuracy']):>8}"
                )
        lines += [
            "",
            f"Standard metrics (per type: good images + that type; AU-PRO up to FPR {self.settings['fpr_limit']:g}; "
            f"image score = {self.settings['image_score']} of the map smoothed with sigma "
            f"{self.settings['smooth_sigma']:g})",
            "",
            f"{'group':<12} " + " ".join(f"{k:>11}" for k in STANDARD),
        ]
        for name, values in results["groups"].items():
            lines.append(f"{name:<12} " + " ".join(f"{_f(values[k]):>11}" for k in STANDARD))
        at = results.get("at_threshold") or {}
        if at:
            source = self.threshold_source()
            lines += [
                "",
                f"At the thresholds fitted on validation ({source}): pixel >= {float(self.pixel_threshold):.4f}, "
                f"image score >= {float(self.image_threshold):.4f}",
                "",
                f"{'group':<12} {'pixel P':>8} {'pixel R':>8} {'pixel F1':>8} {'image P':>8} {'image R':>8} {'image F1':>8}",
            ]
            for name in results["groups"]:
                cells = []
                for level in ("pixel", "image"):
                    values = at.get(level, {}).get(name, {})
                    cells += [_f(values.get(k, float("nan"))) for k in ("precision", "recall", "f1")]
                lines.append(f"{name:<12} " + " ".join(f"{c:>8}" for c in cells))
        return "\n".join(lines)


def per_sample_loss(x: torch.Tensor, x_hat: torch.Tensor, kind: str) -> torch.Tensor:
    """(N,) reconstruction loss per image: mean squared error, or 1 - SSIM (data range 1, 11x11 Gaussian)."""
    if kind == "ssim":
        ssim = structural_similarity_index_measure(x_hat.float(), x.float(), data_range=1.0, reduction="none")
        return 1.0 - ssim
    return (x_hat.float() - x.float()).pow(2).flatten(1).mean(1)


def _f(value: float) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4f}"
