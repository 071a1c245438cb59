"""Symbol evaluation of an embedding: the course's SSD table, leave-one-out 1-NN / k-NN accuracy on a
labelled symbol folder, and nearest-class lookup of new symbols; as numbers and tables (figures:
`tasks.embed.figures`). Also the checks of the `symbols:` config and the resolution of its folders.

Definitions (distances are sums of squared differences, SSD, between embedding vectors):
- SSD table: for each class, its first image (by file name) against every image of the train folder.
- Leave-one-out 1-NN / k-NN accuracy: each train image is classified by the *other* train images
  (the nearest one, or a majority vote of the k nearest; vote ties go to the class whose votes have
  the smaller summed SSD); accuracy = correct / number of train images.
- New images (test folder): classified against all train images the same way (nothing left out);
  "nearest class" = the class of the nearest train image, with that SSD.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field, PositiveInt

from datamodules.io import list_images
from datamodules.mnist import symbol_transform_from_config
from datamodules.symbols import (
    AUTO,
    EMBEDDED,
    SymbolSet,
    check_classes_among,
    class_folders,
    resolve_symbol_folders,
    synthetic_params,
)
from tasks.metrics.knn import knn_predict, ssd_matrix
from visionlab.errors import ConfigError, DataError
from visionlab.schema import Settings

EmbedFn = Callable[[torch.Tensor], torch.Tensor]
#: `symbols.k` when the config leaves it out: neighbours in the k-NN vote
DEFAULT_K = 3


@dataclass
class SymbolReport:
    """Everything `evaluate_symbols` found; tensors on the CPU."""

    k: int
    train: SymbolSet
    train_emb: torch.Tensor  # (N, D)
    ref_index: list[int]  # the first image of each class, in class order
    ssd_table: torch.Tensor  # (C, N): SSD from each class's first image to every train image
    loo_1nn: torch.Tensor  # (N,) leave-one-out predictions
    loo_knn: torch.Tensor  # (N,)
    test: SymbolSet | None = None
    nearest: torch.Tensor | None = None  # (M,) index of the nearest train image
    nearest_ssd: torch.Tensor | None = None  # (M,)
    class_ssd: torch.Tensor | None = None  # (M, C) smallest SSD to each class's train images
    test_1nn: torch.Tensor | None = None  # (M,)
    test_knn: torch.Tensor | None = None  # (M,)

    def scalars(self, prefix: str = "test/symbols") -> dict[str, float]:
        """Accuracies as python floats, for metrics.json."""
        labels = self.train.labels
        out = {
            f"{prefix}/loo_1nn_acc": _acc(self.loo_1nn, labels),
            f"{prefix}/loo_knn_acc": _acc(self.loo_knn, labels),
            f"{prefix}/k": float(self.k),
        }
        if self.test is not None:
            out[f"{prefix}/new_1nn_acc"] = _acc(self.test_1nn, self.test.labels)
            out[f"{prefix}/new_knn_acc"] = _acc(self.test_knn, self.test.labels)
        return out

    def tables(self) -> dict[str, object]:
        """The tables as JSON-ready lists (written by evaluate.py as symbols.json)."""
        names, train = self.train.class_names, self.train
        refs = [train.paths[i].stem for i in self.ref_index]
        out: dict[str, object] = {
            "k": self.k,
            "classes": names,
            "ssd_table": {
                "columns": refs,
                "rows": [
                    {
                        "image": p.stem,
                        "class": names[int(y)],
                        "ssd": {r: float(self.ssd_table[c, i]) for c, r in enumerate(refs)},
                        "loo_1nn": names[int(self.loo_1nn[i])],
                        "loo_knn": names[int(self.loo_knn[i])],
                    }
                    for i, (p, y) in enumerate(zip(train.paths, train.labels, strict=True))
                ],
            },
        }
        if self.test is not None:
            out["new_images"] = [
                {
                    "image": p.stem,
                    "class": names[int(y)],
                    "nearest_image": train.paths[int(self.nearest[j])].stem,
                    "nearest_class": names[int(train.labels[int(self.nearest[j])])],
                    "nearest_ssd": float(self.nearest_ssd[j]),
                    "class_ssd": {n: float(self.class_ssd[j, c]) for c, n in enumerate(names)},
                    "1nn": names[int(self.test_1nn[j])],
                    "knn": names[int(self.test_knn[j])],
                }
                for j, (p, y) in enumerate(zip(self.test.paths, self.test.labels, strict=True))
            ]
        return out


def check_k(k: object) -> int:
    """`symbols.k` must be a positive integer."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"symbols.k={k!r} must be a positive integer (neighbours in the k-NN vote)")
    return k


def check_k_fits(k: int, n_train: int) -> None:
    """Leave-one-out on `n_train` images leaves n_train - 1 neighbours: k must not exceed that."""
    if k > n_train - 1:
        raise ConfigError(
            f"symbols.k={k} but leave-one-out on {n_train} train images has only "
            f"{n_train - 1} neighbours per image; use a smaller k"
        )


def evaluate_symbols(embed: EmbedFn, train: SymbolSet, test: SymbolSet | None, k: int) -> SymbolReport:
    """Embed `train` (and `test`) with `embed` (normalised (N, 1, 28, 28) -> (N, D)) and evaluate."""
    k = check_k(k)
    check_k_fits(k, len(train.labels))
    train_emb = embed(train.images).detach().float().cpu()
    labels = train.labels
    ref_index = [
        int((labels == c).nonzero()[0]) for c in range(len(train.class_names)) if (labels == c).any()
    ]
    report = SymbolReport(
        k=k,
        train=train,
        train_emb=train_emb,
        ref_index=ref_index,
        ssd_table=ssd_matrix(train_emb[ref_index], train_emb),
        loo_1nn=knn_predict(train_emb, labels, train_emb, k=1, exclude_self=True),
        loo_knn=knn_predict(train_emb, labels, train_emb, k=k, exclude_self=True),
    )
    if test is not None:
        test_emb = embed(test.images).detach().float().cpu()
        ssd = ssd_matrix(test_emb, train_emb)
        report.test = test
        report.nearest_ssd, report.nearest = ssd.min(dim=1)
        report.class_ssd = torch.stack(
            [
                ssd[:, labels == c].min(dim=1).values
                if (labels == c).any()
                else torch.full((len(ssd),), torch.inf)
                for c in range(len(train.class_names))
            ],
            dim=1,
        )
        report.test_1nn = knn_predict(train_emb, labels, test_emb, k=1)
        report.test_knn = knn_predict(train_emb, labels, test_emb, k=k)
    return report


def format_symbol_report(report: SymbolReport, folder: str = "", test_folder: str = "") -> str:
    """The printed tables: SSD table with leave-one-out predictions, then the new images."""
    names, train, k = report.train.class_names, report.train, report.k
    refs = [train.paths[i].stem for i in report.ref_index]
    w = max(12, *(len(p.stem) for p in train.paths))
    col = max(11, *(len(r) for r in refs))
    lines = [
        f"symbols: {len(train.labels)} images in {len(names)} classes ({', '.join(names)}) {folder}".rstrip(),
        f"embedding: {report.train_emb.shape[1]}-d; SSD = sum of squared differences; k = {k}",
        "",
        "SSD from each class's first image to every train image, with leave-one-out predictions",
        f"{'image':<{w}}  {'class':<8}"
        + "".join(f"  {r:>{col}}" for r in refs)
        + f"  {'LOO 1-NN':<8}  LOO {k}-NN",
    ]
    for i, (p, y) in enumerate(zip(train.paths, train.labels, strict=True)):
        ssd = "".join(f"  {float(report.ssd_table[c, i]):>{col}.1f}" for c in range(len(refs)))
        lines.append(
            f"{p.stem:<{w}}  {names[int(y)]:<8}{ssd}  {_mark(report.loo_1nn[i], y, names):<8}  "
            f"{_mark(report.loo_knn[i], y, names)}"
        )
    n = len(train.labels)
    lines += [
        "",
        f"leave-one-out accuracy on the train folder: 1-NN {_acc(report.loo_1nn, train.labels):.4f} "
        f"({_hits(report.loo_1nn, train.labels)}/{n}), {k}-NN {_acc(report.loo_knn, train.labels):.4f} "
        f"({_hits(report.loo_knn, train.labels)}/{n})",
    ]
    if report.test is not None:
        test = report.test
        wt = max(12, *(len(p.stem) for p in test.paths))
        wn = max(w, len("nearest image"))
        lines += [
            "",
            f"new images {test_folder}: nearest train image, its SSD, smallest SSD per class, predictions".rstrip(),
            f"{'image':<{wt}}  {'class':<8}  {'nearest image':<{wn}}  {'SSD':>9}"
            + "".join(f"  {n:>9}" for n in names)
            + f"  {'1-NN':<8}  {k}-NN",
        ]
        for j, (p, y) in enumerate(zip(test.paths, test.labels, strict=True)):
            per_class = "".join(f"  {float(report.class_ssd[j, c]):>9.1f}" for c in range(len(names)))
            lines.append(
                f"{p.stem:<{wt}}  {names[int(y)]:<8}  {train.paths[int(report.nearest[j])].stem:<{wn}}  "
                f"{float(report.nearest_ssd[j]):>9.1f}{per_class}  {_mark(report.test_1nn[j], y, names):<8}  "
                f"{_mark(report.test_knn[j], y, names)}"
            )
        m = len(test.labels)
        lines += [
            "",
            f"accuracy on the new images: 1-NN {_acc(report.test_1nn, test.labels):.4f} "
            f"({_hits(report.test_1nn, test.labels)}/{m}), {k}-NN {_acc(report.test_knn, test.labels):.4f} "
            f"({_hits(report.test_knn, test.labels)}/{m})",
        ]
    return "\n".join(lines)


def _acc(pred: torch.Tensor, labels: torch.Tensor) -> float:
    return float((pred == labels).double().mean()) if len(labels) else float("nan")


def _hits(pred: torch.Tensor, labels: torch.Tensor) -> int:
    return int((pred == labels).sum())


def _mark(pred: torch.Tensor, truth: torch.Tensor, names: list[str]) -> str:
    name = names[int(pred)]
    return name if int(pred) == int(truth) else f"{name}*"


class SymbolSettings(Settings):
    """`symbols:` of embed (conf/task/embed.yaml): the labelled symbol set, the new images classified
    against it, the embedded letters, the k-NN vote and the course transform. Absent = no study."""

    group: ClassVar[str] = "symbols"
    owner: ClassVar[str] = "embed's symbols"
    train: str | None = Field(None, description=f"{EMBEDDED}, a folder or null")
    test: str | None = Field(None, description=f"{AUTO}, {EMBEDDED}, a folder or null")
    #: the embedded letters' generator settings (`datamodules.symbols.synthetic_params` checks them)
    synthetic: dict[str, Any] | None = Field(None, description="a mapping of the embedded letters' settings")
    k: PositiveInt = Field(DEFAULT_K, description="a positive integer (neighbours in the k-NN vote)")
    #: the course transform (`datamodules.mnist.symbol_transform_from_config` checks its keys)
    transform: dict[str, Any] | None = Field(
        None, description="a mapping {scale, crop, interpolation, invert}"
    )


def resolve_symbols(symbols: dict[str, Any] | None, cfg: Any) -> dict[str, Any]:
    """The checked `symbols:` config with `embedded` / `auto` replaced by folders (or None), the
    embedded Greek set generated under `paths.data_dir` when it is used."""
    symbols = check_symbols(symbols, folders=True)
    data_dir = cfg.get("paths", {}).get("data_dir") if hasattr(cfg, "get") else None
    data_dir = Path(str(data_dir)).expanduser().resolve() if data_dir else None
    train, test = resolve_symbol_folders(symbols, data_dir)
    return {**symbols, "train": train, "test": test}


def check_symbols(symbols: dict[str, Any] | None, folders: bool = False) -> dict[str, Any]:
    """Validate the `symbols:` config: `train` is `embedded`, a folder or null; `test` is `auto`,
    `embedded`, a folder or null; `synthetic` the embedded set's parameters; `k` fits the train set
    when its size is known. With `folders`, also that the folders exist and the test classes are
    among the train classes (before training or testing starts; a loaded checkpoint's stored folders
    may be gone, which is fine)."""
    settings = SymbolSettings.parse(symbols)
    symbols = settings.model_dump()
    k = settings.k
    symbol_transform_from_config(settings.transform)  # unknown keys fail now, not after training
    params = synthetic_params(settings.synthetic)
    train, test = settings.train, settings.test
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
