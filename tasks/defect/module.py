"""`defect`: a convolutional autoencoder learns good images only; the anomaly map is |x - x_hat|.

Training minimises the reconstruction loss (MSE, or 1 - SSIM) on good images. Validation follows the
reconstruction loss of its good images and fits the decision thresholds; when it holds defective images
(`data.val_defect_fraction`) it also reports the detection metrics every epoch. Test applies the
thresholds fitted on validation (stored as buffers, so they travel with every checkpoint) and reports
the reference's pixel scores and the standard metrics (see `tasks.metrics.defect`,
`tasks.defect.reports` and docs/defect.md).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Unpack

import torch
from omegaconf import OmegaConf
from torchmetrics.functional.image import structural_similarity_index_measure

from datamodules.contract import DescribedData
from tasks.base import TaskArgs, TaskModule, module_kwargs, plain
from tasks.defect import reports
from tasks.defect.figures import example_rows_figure, keep_examples, pr_curve_counts, pr_curves_figure
from tasks.defect.reports import metric_table_markdown, reference_table_markdown
from tasks.defect.settings import DefectModel, check_model, check_settings
from tasks.metrics.anomaly import f1_optimal_threshold, image_scores
from tasks.metrics.defect import DefectEvaluation, MaskedMean, quantile_threshold
from tasks.nets.autoencoder import ConvAutoencoder, anomaly_map
from visionlab.errors import ConfigError
from visionlab.figures import save_figure

log = logging.getLogger(__package__)  # "tasks.defect", as before the package


class DefectTask(TaskModule):
    """Autoencoder anomaly detection. `metrics` holds the evaluation settings (`tasks.defect.settings`)."""

    task_name = "defect"
    monitor = "val/loss"
    summary_metrics = ("test/image_auroc", "test/pixel_auroc", "test/aupro", "test/pixel_ap")
    model_settings_class = DefectModel

    def __init__(self, metrics: dict[str, Any] | None = None, **args: Unpack[TaskArgs]) -> None:
        super().__init__(**args)
        data_info = self.data_info
        self.defect_types: list[str] = list(data_info.get("defect_types", []))
        self.val_has_defects = bool(data_info.get("val_has_defects", False))
        self.settings = check_settings(metrics)
        self.model_settings = check_model(args["model"], data_info.get("image_size"))
        self.loss_kind = self.model_settings.loss
        try:
            self.net = ConvAutoencoder(**self.model_settings.net_kwargs())
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
        size = self.model_settings.input_size
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
        keep_examples(
            self._examples, self._types_cpu, raw, x_hat, maps, masks, evaluation.type_names, per_type
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
        return reports.test_scalars(results, out)

    @staticmethod
    def _pixel_prf(results: dict[str, Any]) -> dict[str, Any] | None:
        return results["at_threshold"].get("pixel")

    def _vmax(self) -> float:
        """Heat maps are drawn from 0 to the largest reference threshold (or twice the fitted one)."""
        fitted = float(self.pixel_threshold)
        return max(max(self.settings["thresholds"]), 2 * fitted if math.isfinite(fitted) else 0.0)

    def _pr_figure(self) -> Any:
        assert self.test_eval is not None
        return pr_curves_figure(self.test_eval.groups, self.test_results, float(self.pixel_threshold))

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
        return reports.threshold_source(
            float(self.threshold_from_defects), self.settings["fallback_quantile"]
        )

    def format_report(self) -> str:
        """The reference's table (per type x threshold: recall, precision, accuracy), then the standard
        metrics per type, then precision / recall / F1 at the thresholds fitted on validation."""
        if not self._report:
            return "(no results)"
        thresholds = (float(self.pixel_threshold), float(self.image_threshold))
        return reports.format_report(
            self._report["results"], self.settings, self.threshold_source(), thresholds
        )


def per_sample_loss(x: torch.Tensor, x_hat: torch.Tensor, kind: str) -> torch.Tensor:
    """(N,) reconstruction loss per image: mean squared error, or 1 - SSIM (data range 1, 11x11 Gaussian)."""
    if kind == "ssim":
        ssim = structural_similarity_index_measure(x_hat.float(), x.float(), data_range=1.0, reduction="none")
        return 1.0 - ssim
    return (x_hat.float() - x.float()).pow(2).flatten(1).mean(1)
