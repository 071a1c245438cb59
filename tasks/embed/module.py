"""`embed`: a small MNIST CNN whose penultimate layer becomes an embedding for unseen symbols.

Training: NLL loss on the network's log-softmax over the digits (or, in the transfer step, over the
classes of a symbol folder with only the new last layer trainable). Evaluation adds, when
`symbols.train` is set (by default `embedded`: the generated Greek letters of
`datamodules.synthetic.greek`), the nearest-neighbour study of `tasks.embed.symbols`. The truncated
network is available from Python on any checkpoint: `EmbedTask.load_embedder(ckpt)(images)`
(`tasks.embed.net`). Figures: `tasks.embed.figures`; reports: `tasks.embed.reports`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Unpack

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from datamodules.contract import TensorData
from datamodules.mnist import DIGITS, symbol_transform_from_config
from datamodules.symbols import MNIST_MEAN, MNIST_STD, SymbolSet, load_symbols, resolve_symbol_folders
from tasks.base import TaskArgs, module_kwargs, plain
from tasks.classifier import ClassifierTask
from tasks.embed import reports
from tasks.embed.figures import (
    feature_maps_figure,
    filter_grid_figure,
    filter_response_figure,
    ssd_table_figure,
)
from tasks.embed.net import (
    TASK_NAME,
    Embedder,
    EmbedModel,
    ProjectorSettings,
    TransferSettings,
    build_net,
    digit_weights,
)
from tasks.embed.symbols import (
    DEFAULT_K,
    SymbolReport,
    check_symbols,
    evaluate_symbols,
    format_symbol_report,
    resolve_symbols,
)
from tasks.nets.mnist import replace_head
from visionlab.checkpointing import load_task_checkpoint
from visionlab.errors import ConfigError
from visionlab.figures import confusion_figure

log = logging.getLogger(__package__)  # "tasks.embed", as before the package


class EmbedTask(ClassifierTask):
    """Digit classifier (`mnist_net` or `convnet`) trained with NLL; its truncated network embeds symbols.

    Extra constructor primitives: `symbols` (the `symbols:` config: folders evaluated at test time,
    k, transform; `from_config` has replaced `embedded` by the generated set's folders), `transfer` ({from_ckpt}: train only a new last layer on the served symbol set,
    starting from a digit checkpoint), `projector_digits` (digits in the TensorBoard projector).
    """

    task_name = TASK_NAME
    monitor = "val/acc"
    summary_metrics = ("test/acc", "test/symbols/loo_1nn_acc", "test/symbols/new_1nn_acc")
    model_settings_class = EmbedModel
    #: the `symbols:` checks (`tasks.embed.symbols.check_symbols`), reachable as before
    _check_symbols = staticmethod(check_symbols)

    def __init__(
        self,
        symbols: dict[str, Any] | None = None,
        transfer: dict[str, Any] | None = None,
        projector_digits: int = 500,
        **args: Unpack[TaskArgs],
    ) -> None:
        super().__init__(**args)
        info, model = self.data_info, args["model"]
        self.class_names: list[str] = list(info.get("class_names") or DIGITS)
        self.mean = float((info.get("mean") or [MNIST_MEAN])[0])
        self.std = float((info.get("std") or [MNIST_STD])[0])
        self.symbols = check_symbols(symbols)
        from_ckpt = (transfer or {}).get("from_ckpt")
        serves_symbols = info.get("source") == "symbols"
        if from_ckpt and not serves_symbols:
            raise ConfigError(
                "transfer.from_ckpt is set but transfer.train is not; give the symbol folder whose classes "
                "the new last layer learns (transfer.train=<folder>)"
            )
        if serves_symbols and not from_ckpt:
            raise ConfigError(
                "transfer.train is set but transfer.from_ckpt is not; give the digit checkpoint whose last "
                "layer is replaced (transfer.from_ckpt=<run>/checkpoints/best.ckpt)"
            )
        num_classes = len(self.class_names)
        if from_ckpt:
            self.net = build_net(model, len(DIGITS))
            if self.load_pretrained:
                self.net.load_state_dict(digit_weights(Path(str(from_ckpt)).expanduser(), model))
            replace_head(self.net, num_classes)  # freezes everything else
        else:
            self.net = build_net(model, num_classes)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_confusion = MulticlassConfusionMatrix(num_classes)
        self._probe: torch.Tensor | None = None  # one validation image (raw uint8) for the figures
        self._confusion: np.ndarray | None = None
        self._symbol_report: SymbolReport | None = None
        self._announce_symbols = True  # print the symbol tables after testing (evaluate.py prints its own)

    # ---- configuration ------------------------------------------------------------------------
    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """The network, the `symbols:` settings and their folders, before data is loaded (the embedded
        Greek set is only checked here; it is generated when the module is built)."""
        super().check_config(cfg)
        check_symbols(plain(cfg.get("symbols")), folders=True)
        TransferSettings.parse(plain(cfg.get("transfer")))
        ProjectorSettings.parse(plain(cfg.get("projector")))

    @classmethod
    def from_config(cls, cfg: Any, data_info: dict[str, Any]) -> EmbedTask:
        symbols = resolve_symbols(plain(cfg.get("symbols")), cfg)
        transfer = TransferSettings.parse(plain(cfg.get("transfer")))
        return cls(
            **module_kwargs(cfg, data_info),
            symbols=symbols,
            transfer={"from_ckpt": transfer.from_ckpt},
            projector_digits=ProjectorSettings.parse(plain(cfg.get("projector"))).digits,
        )

    def configure_evaluation(self, cfg: Any) -> None:
        """evaluate.py: the symbol folders, k and transform come from the evaluate command line."""
        node = cfg.get("symbols")
        self.symbols = resolve_symbols(
            OmegaConf.to_container(node, resolve=True) if node is not None else None, cfg
        )
        self._announce_symbols = False  # evaluate.py prints format_report(), tables included

    # ---- the network --------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (N, classes) for normalised (N, 1, 28, 28) images."""
        return self.net(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The truncated network on normalised (N, 1, 28, 28) images: (N, D), after ReLU (see Embedder)."""
        return self.net.embed(x)

    def embedder(self) -> Embedder:
        """This module's network as an `Embedder` (shares the weights; puts the network in eval mode)."""
        return Embedder(self.net, self.mean, self.std)

    @classmethod
    def load_embedder(cls, ckpt: str | Path, device: str | torch.device = "cpu") -> Embedder:
        """The truncated network of an embed checkpoint, ready to call: `embedder(images) -> (N, D)`.

        Loaded with `torch.load(weights_only=True)`; D = 50 for `mnist_net` (after the ReLU).
        """
        module = load_task_checkpoint(cls, Path(ckpt).expanduser(), cls.task_name)
        return module.embedder().to(device)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Only trainable parameters (in the transfer step: the new last layer)."""
        return [
            {
                "params": [p for p in self.parameters() if p.requires_grad],
                "lr": float(self.hparams.optimizer["lr"]),
            }
        ]

    # ---- steps --------------------------------------------------------------------------------
    def classification_loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.nll_loss(outputs, labels)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y, raw = batch
        log_probs = self(x)
        self.log("val/loss", F.nll_loss(log_probs, y), on_step=False, on_epoch=True)
        self.val_acc.update(log_probs, y)
        if batch_idx == 0 and self._probe is None:
            self._probe = raw[:1]

    def on_validation_epoch_end(self) -> None:
        acc = self.epoch_results(self.val_acc)
        if acc is None:
            return
        self.log("val/acc", acc, prog_bar=True)
        writer = self.tensorboard
        if writer is None or self._probe is None:
            return
        step = self.current_epoch
        image = self.normalize(self._probe)
        with torch.no_grad():
            maps = self.net.feature_maps(image)
        writer.add_figure("filters/conv1", filter_grid_figure(self.net.conv1.weight), step)
        writer.add_figure("filters/responses", filter_response_figure(self.net.conv1.weight, image[0]), step)
        writer.add_figure("features/maps", feature_maps_figure(maps, image[0]), step)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, y, _ = batch
        log_probs = self(x)
        self.log("test/loss", F.nll_loss(log_probs, y), on_step=False, on_epoch=True)
        self.test_acc.update(log_probs, y)
        self.test_confusion.update(log_probs, y)

    def on_test_epoch_end(self) -> None:
        acc = float(self.test_acc.compute())
        confusion = self.test_confusion.compute().cpu().numpy()
        self.test_acc.reset()
        self.test_confusion.reset()
        self._confusion = confusion
        results = {"test/acc": acc}
        per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
        results.update(
            {f"test/acc_class/{n}": float(a) for n, a in zip(self.class_names, per_class, strict=True)}
        )
        self._symbol_report = self.run_symbol_evaluation()
        if self._symbol_report is not None:
            results.update(self._symbol_report.scalars())
        self.test_results = results
        self.log_dict(results)
        report = self._symbol_report
        if report is not None and self._announce_symbols and self.trainer.is_global_zero:
            log.info("symbol study in the embedding of the tested checkpoint:\n%s", self.symbol_report_text())
        writer = self.tensorboard
        if writer is not None:
            writer.add_figure("test/confusion_matrix", confusion_figure(confusion, self.class_names))
            if report is not None:
                writer.add_figure("test/symbols_ssd_table", ssd_table_figure(report))
                text = "\n".join("    " + line for line in self.symbol_report_text().splitlines())
                writer.add_text("test/symbols_report", text)  # indented: shown as preformatted text

    # ---- symbols ------------------------------------------------------------------------------
    def load_symbol_sets(self) -> tuple[SymbolSet | None, SymbolSet | None]:
        """The configured `symbols.train` / `symbols.test` folders, course-transformed and normalised."""
        # folders already (from_config / configure_evaluation resolve `embedded`); a module built by hand
        # with `embedded` gets a ConfigError asking for paths.data_dir
        train_dir, test_dir = resolve_symbol_folders(self.symbols, None)
        if not train_dir:
            return None, None
        transform = symbol_transform_from_config(self.symbols.get("transform"), self.mean, self.std)
        train = load_symbols(train_dir, transform)
        test = load_symbols(test_dir, transform, train.class_names) if test_dir else None
        return train, test

    def run_symbol_evaluation(self) -> SymbolReport | None:
        """SSD table, leave-one-out and new-image k-NN on the configured folders (None when unset)."""
        train, test = self.load_symbol_sets()
        if train is None:
            return None
        was_training = self.net.training
        self.net.eval()
        try:
            with torch.no_grad():
                return evaluate_symbols(
                    lambda x: self.net.embed(x.to(self.device)),
                    train,
                    test,
                    int(self.symbols.get("k", DEFAULT_K)),
                )
        finally:
            self.net.train(was_training)

    # ---- the embedding projector --------------------------------------------------------------
    def on_train_end(self) -> None:
        """TensorBoard projector: validation images (digits) and the configured symbols, with sprites."""
        writer = self.tensorboard
        datamodule = getattr(self.trainer, "datamodule", None)
        if writer is None or datamodule is None or not isinstance(datamodule, TensorData):
            return
        raw, labels = datamodule.tensors("val")
        raw, labels = raw[: self.hparams.projector_digits], labels[: self.hparams.projector_digits]
        source = "symbols" if self.hparams.get("data_info", {}).get("source") == "symbols" else "digits"
        images = [raw.permute(0, 3, 1, 2).float() / 255.0]
        meta = [[self.class_names[int(y)], source] for y in labels]
        train, test = self.load_symbol_sets()
        for name, symbols in (("symbols/train", train), ("symbols/test", test)):
            if symbols is not None:
                images.append((symbols.images * self.std + self.mean).clamp(0, 1))
                meta += [[symbols.class_names[int(y)], name] for y in symbols.labels]
        sprites = torch.cat(images)
        if not len(sprites):  # projector.digits=0 and no symbols: nothing to project
            return
        was_training = self.net.training
        self.net.eval()
        with torch.no_grad():
            emb = torch.cat(
                [self.net.embed(((im - self.mean) / self.std).to(self.device)) for im in sprites.split(256)]
            )
        self.net.train(was_training)
        writer.add_embedding(
            emb.float().cpu(),
            metadata=meta,
            metadata_header=["label", "set"],
            label_img=sprites,
            global_step=self.global_step,
            # the projector lists it as "<tag>:<step>": name the network and the embedding's size
            tag=f"{self.hparams.model.get('arch', 'net')}_embedding_{emb.shape[1]}d",
        )
        writer.flush()

    # ---- reports --------------------------------------------------------------------------------
    def write_report(self, out_dir: Path) -> None:
        """filters_conv1.png, confusion_matrix.png (digits); with symbols: ssd_table.png,
        symbols_train_loo.png, symbols_test.png and symbols.json (every table)."""
        reports.write_report(out_dir, self.net.conv1.weight, self._confusion, self.class_names,
                             self._symbol_report, self.mean, self.std)  # fmt: skip

    def report_tables(self) -> dict[str, Any]:
        """Class names, the digit confusion matrix and the symbol tables (SSD table, 1-NN/k-NN, new images)."""
        return reports.report_tables(self.class_names, self._confusion, self._symbol_report)

    def format_report(self) -> str:
        symbols = self.symbol_report_text() if self._symbol_report is not None else None
        return reports.format_report(self.test_results, self.class_names, symbols)

    def symbol_report_text(self) -> str:
        """The printed symbol tables: SSD table, leave-one-out predictions and accuracies, new images."""
        assert self._symbol_report is not None
        return format_symbol_report(
            self._symbol_report, f"from {self.symbols.get('train')}", f"from {self.symbols.get('test')}"
        )
