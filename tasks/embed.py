"""`embed`: a small MNIST CNN whose penultimate layer becomes an embedding for unseen symbols.

Training: NLL loss on the network's log-softmax over the digits (or, in the transfer step, over the
classes of a symbol folder with only the new last layer trainable). Evaluation adds, when
`symbols.train` is set (by default `embedded`: the generated Greek letters of
`datamodules.synthetic.greek`), the nearest-neighbour study of `tasks.embed_symbols`. The truncated
network is available from Python on any checkpoint: `EmbedTask.load_embedder(ckpt)(images)`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from datamodules.contract import TensorData
from datamodules.io import list_images
from datamodules.mnist import DIGITS, symbol_transform_from_config
from datamodules.symbols import (
    AUTO,
    EMBEDDED,
    MNIST_MEAN,
    MNIST_STD,
    SymbolSet,
    check_classes_among,
    class_folders,
    load_symbols,
    resolve_symbol_folders,
    synthetic_params,
)
from tasks.base import TaskModule, module_kwargs, plain
from tasks.embed_figures import feature_maps_figure, filter_grid_figure, filter_response_figure
from tasks.embed_symbols import (
    SymbolReport,
    check_k,
    check_k_fits,
    evaluate_symbols,
    format_symbol_report,
    predictions_figure,
    ssd_table_figure,
)
from tasks.nets.mnist import ConvNet, MnistNet, replace_head
from visionlab.checkpointing import load_task_checkpoint, read_task_checkpoint
from visionlab.errors import ConfigError, DataError
from visionlab.figures import confusion_figure, save_figure

log = logging.getLogger(__name__)
NETS: dict[str, type[MnistNet] | type[ConvNet]] = {"mnist_net": MnistNet, "convnet": ConvNet}


def check_net(model: dict[str, Any]) -> float:
    """ConfigError unless `model.arch` names an embed network and `model.dropout` is in [0, 1);
    returns the dropout (null = 0)."""
    arch = model.get("arch")
    if arch not in NETS:
        raise ConfigError(f"model.arch={arch!r} is not an embed model; expected one of {sorted(NETS)}")
    dropout = float(model.get("dropout") or 0.0)
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"model.dropout={dropout} must be in [0, 1)")
    return dropout


def build_net(model: dict[str, Any], num_classes: int) -> MnistNet | ConvNet:
    """The network named by `model.arch` with `model.dropout` (null = 0)."""
    dropout = check_net(model)
    return NETS[model["arch"]](dropout=dropout, num_classes=num_classes)


class Embedder(nn.Module):
    """A trained network truncated after its penultimate layer: images -> (N, D) embeddings.

    D = 50 for `mnist_net` (fc1's output AFTER its ReLU, so every value is >= 0) and 1000 for
    `convnet` (also after ReLU). Always in evaluation mode (dropout off) and without gradients.
    Input: uint8 pixels, white strokes on black, (N, 28, 28), (N, 28, 28, 1) or (N, 1, 28, 28),
    normalised here with the training data's mean/std; or float (N, 1, 28, 28) already normalised
    (what `load_symbols` returns).
    """

    def __init__(self, net: MnistNet | ConvNet, mean: float = MNIST_MEAN, std: float = MNIST_STD) -> None:
        super().__init__()
        self.net = net.eval()
        self.mean, self.std = float(mean), float(std)
        self.dim = int(net.embedding_dim)

    def train(self, mode: bool = True) -> Embedder:
        return super().train(False)  # stays in evaluation mode: embeddings must not be random

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Any accepted input -> normalised float (N, 1, 28, 28) on the network's device."""
        device = next(self.net.parameters()).device
        x = torch.as_tensor(images).to(device)
        if x.dtype == torch.uint8:
            if x.ndim == 3:
                x = x[:, None]
            elif x.ndim == 4 and x.shape[-1] == 1:
                x = x.permute(0, 3, 1, 2)
            x = (x.float() / 255.0 - self.mean) / self.std
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise ValueError(
                f"expected uint8 (N, 28, 28[, 1]) / (N, 1, 28, 28) or normalised float (N, 1, 28, 28), "
                f"got {x.dtype} {tuple(x.shape)}"
            )
        return x.float()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.embed(self.prepare(images))

    def embed_folder(
        self, folder: str | Path, transform: dict[str, Any] | None = None
    ) -> tuple[torch.Tensor, SymbolSet]:
        """Embed every image of a class-per-folder symbol set (course transform, `symbols.transform`
        keys): returns (embeddings (N, D), the loaded SymbolSet with labels, class names and paths)."""
        symbols = load_symbols(folder, symbol_transform_from_config(transform, self.mean, self.std))
        return self(symbols.images), symbols


class EmbedTask(TaskModule):
    """Digit classifier (`mnist_net` or `convnet`) trained with NLL; its truncated network embeds symbols.

    Extra constructor primitives: `symbols` (the `symbols:` config: folders evaluated at test time,
    k, transform; `from_config` has replaced `embedded` by the generated set's folders), `transfer` ({from_ckpt}: train only a new last layer on the served symbol set,
    starting from a digit checkpoint), `projector_digits` (digits in the TensorBoard projector).
    """

    task_name = "embed"
    monitor = "val/acc"
    summary_metrics = ("test/acc", "test/symbols/loo_1nn_acc", "test/symbols/new_1nn_acc")

    def __init__(
        self,
        model: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        data_info: dict[str, Any] | None = None,
        load_pretrained: bool = True,
        symbols: dict[str, Any] | None = None,
        transfer: dict[str, Any] | None = None,
        projector_digits: int = 500,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["load_pretrained"])
        info = data_info or {}
        self.class_names: list[str] = list(info.get("class_names") or DIGITS)
        self.mean = float((info.get("mean") or [MNIST_MEAN])[0])
        self.std = float((info.get("std") or [MNIST_STD])[0])
        self.symbols = self._check_symbols(symbols)
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
            if load_pretrained:
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
        check_net(plain(cfg.model))
        cls._check_symbols(plain(cfg.get("symbols")), folders=True)

    @classmethod
    def from_config(cls, cfg: Any, data_info: dict[str, Any]) -> EmbedTask:
        projector = plain(cfg.get("projector")) or {}
        symbols = cls._resolve_symbols(plain(cfg.get("symbols")), cfg)
        return cls(
            **module_kwargs(cfg, data_info),
            symbols=symbols,
            transfer={"from_ckpt": (plain(cfg.get("transfer")) or {}).get("from_ckpt")},
            projector_digits=int(projector.get("digits", 500)),
        )

    def configure_evaluation(self, cfg: Any) -> None:
        """evaluate.py: the symbol folders, k and transform come from the evaluate command line."""
        node = cfg.get("symbols")
        self.symbols = self._resolve_symbols(
            OmegaConf.to_container(node, resolve=True) if node is not None else None, cfg
        )
        self._announce_symbols = False  # evaluate.py prints format_report(), tables included

    @classmethod
    def _resolve_symbols(cls, symbols: dict[str, Any] | None, cfg: Any) -> dict[str, Any]:
        """The checked `symbols:` config with `embedded` / `auto` replaced by folders (or None), the
        embedded Greek set generated under `paths.data_dir` when it is used."""
        symbols = cls._check_symbols(symbols, folders=True)
        data_dir = cfg.get("paths", {}).get("data_dir") if hasattr(cfg, "get") else None
        data_dir = Path(str(data_dir)).expanduser().resolve() if data_dir else None
        train, test = resolve_symbol_folders(symbols, data_dir)
        return {**symbols, "train": train, "test": test}

    @staticmethod
    def _check_symbols(symbols: dict[str, Any] | None, folders: bool = False) -> dict[str, Any]:
        """Validate the `symbols:` config: `train` is `embedded`, a folder or null; `test` is `auto`,
        `embedded`, a folder or null; `synthetic` the embedded set's parameters; `k` fits the train set
        when its size is known. With `folders`, also that the folders exist and the test classes are
        among the train classes (before training or testing starts; a loaded checkpoint's stored folders
        may be gone, which is fine)."""
        symbols = dict(symbols or {})
        k = check_k(symbols.get("k", 3))
        symbol_transform_from_config(symbols.get("transform"))  # unknown keys fail now, not after training
        params = synthetic_params(symbols.get("synthetic"))
        train, test = symbols.get("train"), symbols.get("test")
        if train == AUTO:
            raise ConfigError(
                "symbols.train=auto: auto is for symbols.test; give symbols.train=embedded, a folder or null"
            )
        if test == AUTO:
            test = EMBEDDED if train == EMBEDDED else None
        if test and not train:
            raise ConfigError(
                "symbols.test is set but symbols.train is not; new images are classified against symbols.train"
            )
        if train == EMBEDDED:
            check_k_fits(k, len(params["classes"]) * params["per_class_train"])
        if not folders or not train:
            return symbols
        for key, folder in (("train", train), ("test", test)):
            if folder and folder != EMBEDDED and not Path(str(folder)).expanduser().is_dir():
                raise DataError(
                    f"symbols.{key}={folder}: symbol folder not found; expected <folder>/<class>/<image>.png"
                )
        embedded = list(params["classes"])
        train_classes = embedded if train == EMBEDDED else class_folders(str(train))
        if test:
            test_classes = embedded if test == EMBEDDED else class_folders(str(test))
            check_classes_among(
                "the embedded set (symbols.synthetic.classes)" if test == EMBEDDED else test,
                test_classes,
                train_classes,
            )
        if train != EMBEDDED:
            root = Path(str(train)).expanduser()
            check_k_fits(k, sum(len(list_images(root / c)) for c in train_classes))
        return symbols

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
    def prepare_batch(self, batch: Any) -> Any:
        images, labels = batch
        return self.normalize(images), labels, images

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y, _ = batch
        log_probs = self(x)
        loss = F.nll_loss(log_probs, y)
        self.train_acc.update(log_probs, y)
        self.log_train_loss(loss, y.shape[0])
        return loss

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self.log("train/acc", self.train_acc.compute())
        self.train_acc.reset()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y, raw = batch
        log_probs = self(x)
        self.log("val/loss", F.nll_loss(log_probs, y), on_step=False, on_epoch=True)
        self.val_acc.update(log_probs, y)
        if batch_idx == 0 and self._probe is None:
            self._probe = raw[:1]

    def on_validation_epoch_end(self) -> None:
        acc = self.val_acc.compute()
        self.val_acc.reset()
        if self.trainer.sanity_checking:
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
                    lambda x: self.net.embed(x.to(self.device)), train, test, int(self.symbols.get("k", 3))
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
        save_figure(filter_grid_figure(self.net.conv1.weight), out_dir / "filters_conv1.png")
        if self._confusion is not None:
            save_figure(confusion_figure(self._confusion, self.class_names), out_dir / "confusion_matrix.png")
        report = self._symbol_report
        if report is None:
            return
        save_figure(ssd_table_figure(report), out_dir / "ssd_table.png")
        save_figure(
            predictions_figure(
                report.train,
                report.train.labels,
                report.loo_1nn,
                report.loo_knn,
                report.k,
                self.mean,
                self.std,
            ),
            out_dir / "symbols_train_loo.png",
        )
        if report.test is not None:
            save_figure(
                predictions_figure(
                    report.test,
                    report.test.labels,
                    report.test_1nn,
                    report.test_knn,
                    report.k,
                    self.mean,
                    self.std,
                ),
                out_dir / "symbols_test.png",
            )
        (out_dir / "symbols.json").write_text(json.dumps(report.tables(), indent=1))

    def report_tables(self) -> dict[str, Any]:
        """Class names, the digit confusion matrix and the symbol tables (SSD table, 1-NN/k-NN, new images)."""
        out: dict[str, Any] = {"class_names": self.class_names}
        if self._confusion is not None:
            out["confusion"] = np.asarray(self._confusion).astype(int).tolist()
        if self._symbol_report is not None:
            out["symbols"] = self._symbol_report.tables()
        return out

    def format_report(self) -> str:
        r = self.test_results
        lines = [f"classification accuracy (micro) {r['test/acc']:.4f}", "", "class  accuracy"]
        lines += [f"{n:<5}  {r[f'test/acc_class/{n}']:8.4f}" for n in self.class_names]
        if self._symbol_report is not None:
            lines += ["", self.symbol_report_text()]
        return "\n".join(lines)

    def symbol_report_text(self) -> str:
        """The printed symbol tables: SSD table, leave-one-out predictions and accuracies, new images."""
        assert self._symbol_report is not None
        return format_symbol_report(
            self._symbol_report, f"from {self.symbols.get('train')}", f"from {self.symbols.get('test')}"
        )


def digit_weights(ckpt: Path, model: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The network state dict of a digit checkpoint of this task, for the transfer step."""
    if not ckpt.is_file():
        raise ConfigError(
            f"transfer.from_ckpt={ckpt} is not a file; give a digit checkpoint written by train.py task=embed"
        )
    mismatch = "transfer.from_ckpt={path} is not an embed checkpoint (task: {saved})"
    state = read_task_checkpoint(ckpt, EmbedTask.task_name, detail="", mismatch=mismatch)
    hparams = state.get("hyper_parameters", {})
    if (hparams.get("transfer") or {}).get("from_ckpt"):
        raise ConfigError(
            f"transfer.from_ckpt={ckpt} is itself a transfer checkpoint; give a digit checkpoint"
        )
    arch = (hparams.get("model") or {}).get("arch")
    if arch != model.get("arch"):
        raise ConfigError(f"transfer.from_ckpt={ckpt} holds a {arch} network; pass model={arch}")
    return {k.removeprefix("net."): v for k, v in state["state_dict"].items() if k.startswith("net.")}
