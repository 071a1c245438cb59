"""`train(cfg)` and `evaluate(cfg)`: the whole life of a run, callable from tests and entry points."""

from __future__ import annotations

import atexit
import logging
import math
import shlex
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from tasks.base import plain
from visionlab import sweep
from visionlab.callbacks import run_callbacks, skip_unused_batch_hooks
from visionlab.checkpointing import AtomicCheckpointIO, load_task_checkpoint, read_task_checkpoint
from visionlab.cli import claimed_run_dir, discard_stub_run_dir, log_to_files, move_log_to
from visionlab.errors import ConfigError, DataError
from visionlab.files import write_json
from visionlab.hparams import log_final_hparams
from visionlab.loggers import build_loggers as build_logger_entries
from visionlab.report import write_run_report
from visionlab.report.record import searchpath_overrides
from visionlab.validation import check_ddp_in_multirun, compile_mode, task_classes, validate_config

log = logging.getLogger(__name__)

# Lightning notes that are expected here, not actionable: normalisation lives in the LightningModule's
# on_after_batch_transfer by design, and in-memory datasets are fastest without workers.
for _message in (
    ".*overridden `on_(before|after)_batch_transfer` in `LightningModule`.*",
    ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*",
    ".*does not have many workers which may be a bottleneck.*",
):
    warnings.filterwarnings("ignore", message=_message)


class _NoPlatformTips(logging.Filter):
    """Drops Lightning's advertising lines ("💡 Tip: ... litlogger / litmodels"), printed on every run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoPlatformTips())


def train(cfg: DictConfig) -> float | None:
    """Train `cfg.task_name`, test the best checkpoint, and return the value of `cfg.optimized_metric`."""
    validate_config(cfg)
    apply_resume(cfg)
    run_dir = prepare_run_dir(cfg)
    check_ddp_in_multirun(cfg)
    if cfg.get("seed") is not None:
        pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    loggers = build_loggers(cfg)
    trainer = build_trainer(cfg, run_callbacks(cfg), loggers)

    resume_from = _resume_path(cfg)
    if resume_from is not None:
        check_resume_checkpoint(module, Path(resume_from), cfg.task_name)
    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    metrics["time/train_s"] = time.perf_counter() - started
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.best_model_score is not None:
        metrics[f"best/{cfg.monitor.metric}"] = float(checkpoint.best_model_score)

    if cfg.get("run_test", True) and not trainer.fast_dev_run:
        best = checkpoint.best_model_path if checkpoint is not None and checkpoint.best_model_path else None
        trainer.test(module, datamodule=datamodule, ckpt_path=best, weights_only=True)
        metrics.update(module.test_results)
    elif cfg.get("run_test", True):
        trainer.test(module, datamodule=datamodule)
        metrics.update(module.test_results)

    if trainer.is_global_zero:
        log_final_hparams(loggers, cfg, metrics, type(module).summary_metrics, trainer.global_step)
        write_json(run_dir / "metrics.json", metrics)
        best = checkpoint.best_model_path if checkpoint is not None else ""
        report_end_of_run(cfg, run_dir, metrics, best, type(module).summary_metrics)
        write_run_report(cfg, run_dir, module, "train")
    value = metrics.get(cfg.get("optimized_metric") or "")
    return value if value is None or math.isfinite(value) else None


def report_end_of_run(
    cfg: DictConfig, run_dir: Path, metrics: dict[str, float], best: str, headline: tuple[str, ...]
) -> None:
    """Print (and write to train.log) what a run produced and what to do next: the best checkpoint, the
    monitored metric, the task's main test metrics, and the commands to look at and evaluate it."""
    monitor = str(cfg.monitor.metric)
    lines = [
        f"{cfg.task_name}: trained in {metrics.get('time/train_s', float('nan')):.0f} s; run folder {run_dir}"
    ]
    if best:
        score = metrics.get(f"best/{monitor}")
        lines.append(f"best checkpoint: {best}" + (f" ({monitor} {score:.4f})" if score is not None else ""))
    shown = [k for k in (*headline, monitor.replace("val/", "test/", 1)) if k in metrics]
    if shown:
        lines.append("test: " + "  ".join(f"{k} {metrics[k]:.4f}" for k in dict.fromkeys(shown)))
    lines.append(f"all metrics: {run_dir / 'metrics.json'}")
    task_dir = Path(str(cfg.paths.output_dir)).expanduser() / str(cfg.task_name)
    logdir = task_dir if task_dir.resolve() in run_dir.resolve().parents else run_dir
    lines.append(f"next: tensorboard --logdir {logdir}")
    if best:
        stage = f" stage={cfg.stage}" if int(cfg.get("stage") or 1) > 1 else ""
        searchpath = "".join(f" {shlex.quote(o)}" for o in searchpath_overrides())
        lines.append(f"      python evaluate.py task={cfg.task_name}{stage}{searchpath} ckpt_path={best}")
    print("\n" + "\n".join(lines), flush=True)
    for line in lines:
        log_to_files(logging.INFO, line)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test `cfg.ckpt_path` on `cfg.split`; write metrics.json and figures into the run folder."""
    run_dir = prepare_run_dir(cfg)
    ckpt = Path(str(cfg.ckpt_path)).expanduser()
    if not ckpt.is_file():
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path} is not a file; give the path of a .ckpt written by train.py"
        )
    if cfg.get("seed") is not None:
        pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    module_cls, _ = task_classes(cfg)
    module = load_task_checkpoint(module_cls, ckpt, cfg.task_name)
    datamodule = build_datamodule(cfg, module.hparams.get("data_info"))
    expected = module.hparams.get("data_info", {}).get("class_names")
    found = datamodule.info().get("class_names")
    if expected is not None and found is not None and list(expected) != list(found):
        raise DataError(f"the data has classes {found} but {ckpt} was trained on {expected}")
    module.configure_evaluation(cfg)
    trainer = build_trainer(cfg, [], False)
    if cfg.get("split", "test") == "val":
        trainer.validate(module, datamodule=datamodule)
        results = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    else:
        trainer.test(module, datamodule=datamodule)
        results = dict(module.test_results)
    module.write_report(run_dir)
    write_json(run_dir / "metrics.json", results)
    print(f"\n{cfg.task_name}: {ckpt} on the {cfg.get('split', 'test')} split\n")
    print(module.format_report())
    print(f"\nwritten: {run_dir}/metrics.json")
    write_run_report(cfg, run_dir, module, "evaluate")
    return results


def check_resume_checkpoint(module: pl.LightningModule, ckpt: Path, task_name: str) -> None:
    """Refuse, before training, a checkpoint to resume from that is of another task or whose weights do
    not fit the configured model (e.g. another model.arch or number of classes)."""
    state = read_task_checkpoint(ckpt, task_name)
    try:
        module.load_state_dict(state.get("state_dict", {}))
    except RuntimeError as err:
        raise ConfigError(
            f"{ckpt}: its weights do not fit the configured {task_name} model ({str(err).splitlines()[0]} "
            f"{_first_mismatch(str(err))}); resume with the settings it was trained with"
        ) from None


def _first_mismatch(message: str) -> str:
    """The first 'size mismatch for <key>' line of a load_state_dict error, if any."""
    lines = [
        line.strip() for line in message.splitlines() if "size mismatch" in line or "Missing key" in line
    ]
    return lines[0] if lines else ""


def apply_resume(cfg: DictConfig) -> None:
    """`resume=<run folder>`: continue that run in place from its checkpoints/last.ckpt.
    `resume=last` or `ckpt_path=last`: the same for the newest run of this task."""
    if cfg.get("ckpt_path") == "last":
        if cfg.get("resume"):
            raise ConfigError("give either resume=<run folder> or ckpt_path=<checkpoint>, not both")
        cfg.resume, cfg.ckpt_path = "last", None
    if not cfg.get("resume"):
        _resume_path(cfg)  # a ckpt_path that is not a file is refused before any data is loaded
        return
    if cfg.resume == "last":
        cfg.resume = str(latest_run(cfg))
        log.info("resuming the newest %s run: %s", cfg.task_name, cfg.resume)
    folder = Path(str(cfg.resume)).expanduser()
    last = folder / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise ConfigError(
            f"resume={cfg.resume}: {last} does not exist; give the folder of a run that saved a checkpoint"
        )
    if cfg.get("ckpt_path"):
        raise ConfigError("give either resume=<run folder> or ckpt_path=<checkpoint>, not both")
    cfg.paths.run_dir = str(folder.resolve())
    cfg.ckpt_path = str(last)
    continue_in(folder.resolve())


def continue_in(folder: Path) -> None:
    """A resumed run writes only into `folder`: its log goes on in `folder`'s train.log (with the
    command line of this resume), and the folder Hydra created for this command is removed at exit
    if nothing else was written there."""
    warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
    new = claimed_run_dir()
    if new is None or new == folder or rank_zero_only.rank != 0:
        return
    move_log_to(folder)
    sweep.resumed_into = folder
    overrides = " ".join(HydraConfig.get().overrides.task)
    log_to_files(logging.INFO, f"resumed in this folder: {overrides}")
    atexit.register(discard_stub_run_dir, new)


def latest_run(cfg: DictConfig) -> Path:
    """The run folder under `paths.output_dir/<task>/` whose checkpoints/last.ckpt was written last."""
    runs = Path(str(cfg.paths.output_dir)).expanduser() / str(cfg.task_name)
    found = sorted(runs.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise ConfigError(
            f"ckpt_path=last / resume=last: no run under {runs} has checkpoints/last.ckpt; "
            "give a checkpoint file or run folder instead"
        )
    return found[-1].parent.parent


def prepare_run_dir(cfg: DictConfig) -> Path:
    """Create the run folder and write the resolved config into it."""
    run_dir = Path(cfg.paths.run_dir)
    if rank_zero_only.rank == 0:  # DDP ranks > 0 share rank 0's folder and write nothing
        run_dir.mkdir(parents=True, exist_ok=True)
        resolved = OmegaConf.to_container(cfg, resolve=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(resolved))
    return run_dir


def datamodule_from_config(
    cfg: DictConfig, trained_on: dict[str, Any] | None = None
) -> pl.LightningDataModule:
    """The task's DataModule built from `cfg.data`, nothing read or generated yet. For evaluation,
    `trained_on` supplies the image size the checkpoint expects."""
    _, data_cls = task_classes(cfg)
    kwargs = plain(cfg.data)
    if trained_on and "image_size" in trained_on and "image_size" in kwargs:
        kwargs["image_size"] = trained_on["image_size"]
    try:
        return data_cls(data_dir=str(Path(cfg.paths.data_dir).expanduser().resolve()), **kwargs)
    except TypeError as err:
        raise ConfigError(f"data: {err}") from None


def build_datamodule(cfg: DictConfig, trained_on: dict[str, Any] | None = None) -> pl.LightningDataModule:
    """The task's DataModule from `cfg.data`, prepared and set up (class names are needed to build
    the model)."""
    datamodule = datamodule_from_config(cfg, trained_on)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def build_module(cfg: DictConfig, datamodule: pl.LightningDataModule) -> pl.LightningModule:
    """The task's LightningModule for training on `datamodule`, its networks compiled if `compile=`."""
    module_cls, _ = task_classes(cfg)
    module = module_cls.from_config(cfg, datamodule.info())
    mode = compile_mode(cfg.get("compile"))
    if mode is not None:
        module.compile_networks(mode)
    return module


def build_loggers(cfg: DictConfig) -> list[Logger]:
    """One logger per non-null entry of `cfg.logger` (null = none), built from its `_target_`."""
    return build_logger_entries(plain(cfg.get("logger")))


def build_trainer(cfg: DictConfig, callbacks: list[Any], loggers: list[Logger] | bool) -> pl.Trainer:
    """A Trainer from `cfg.trainer`; an unknown key is a ConfigError naming it. The per-batch hooks
    no callback implements are skipped (`skip_unused_batch_hooks`)."""
    kwargs = plain(cfg.trainer)
    if kwargs.get("accelerator") in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError("trainer.accelerator=gpu but no CUDA device is visible; use trainer=cpu")
    torch.set_float32_matmul_precision("high")
    try:
        trainer = pl.Trainer(
            **kwargs,
            callbacks=callbacks,
            logger=loggers,
            default_root_dir=str(cfg.paths.run_dir),
            plugins=[AtomicCheckpointIO()],
            enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        )
    except TypeError as err:
        raise ConfigError(f"trainer: {err}") from None
    for callback in trainer.callbacks:  # the run's and those Lightning adds (model summary)
        skip_unused_batch_hooks(callback)
    return trainer


def _resume_path(cfg: DictConfig) -> str | None:
    ckpt = cfg.get("ckpt_path")
    if ckpt is None:
        return None
    if not Path(str(ckpt)).expanduser().is_file():
        raise ConfigError(
            f"ckpt_path={ckpt} is not a file; give a checkpoint to resume from, e.g. <run>/checkpoints/last.ckpt"
        )
    return str(Path(str(ckpt)).expanduser())
