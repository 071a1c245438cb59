"""The pose cascade chain: finding, checking and loading the earlier stages a refiner builds on.

A stage-s checkpoint stores its stage and the paths of its parents' checkpoints (stage 1 .. s-1); a
new stage-s run takes its parent from `prev_ckpt` or the newest finished stage s-1 run under the
output folder, and a resumed one keeps the parents its checkpoint names. Parents load with
weights_only=True, frozen, in eval mode; only their nets and crop settings are kept.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from tasks.nets.deeppose import DeepPoseNet
from visionlab.checkpointing import read_task_checkpoint
from visionlab.errors import ConfigError

log = logging.getLogger(__package__)  # "tasks.pose", as before the package


class ChainStage(NamedTuple):
    """One stage of the cascade as inference needs it."""

    stage: int
    net: DeepPoseNet
    sigma: float
    min_crop: float


class StageModule(Protocol):
    """What `load_chain` reads of a loaded pose checkpoint (the `PoseTask`, passed in by its caller)."""

    stage: int
    net: DeepPoseNet
    sigma: float
    min_crop: float


def read_hparams(path: Path) -> dict[str, Any]:
    """The hyperparameters of a pose checkpoint (memory-mapped: the weights are not read)."""
    state = read_task_checkpoint(path, "pose", mmap=True, error=ConfigError, detail="")
    return dict(state.get("hyper_parameters", {}))


def parent_checkpoints(cfg: Any, stage: int, data_info: dict[str, Any]) -> list[str]:
    """The parents (stage 1 .. s-1) of a stage-`stage` run: those of the checkpoint it resumes from,
    else the previous stage's own parents and the previous stage, checked against this run's data."""
    if stage == 1:
        return []
    resumed = _resumed_parents(cfg, stage)
    if resumed is not None:  # resuming: keep the cascade the run started with
        return resumed
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
    return [*hp.get("parent_ckpts", []), str(prev)]


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


def load_chain(paths: list[str], task_cls: Any) -> list[ChainStage]:
    """Load the parent checkpoints (stage 1 .. s-1) with weights_only=True, frozen, in eval mode.
    `task_cls` is the pose LightningModule (passed in: it imports this file)."""
    chain = []
    for k, path in enumerate(paths, start=1):
        if not Path(path).is_file():
            raise ConfigError(
                f"parent checkpoint {path} (stage {k} of this cascade) is missing; the cascade needs every "
                "earlier stage's checkpoint at the path stored in the later one"
            )
        parent: StageModule = task_cls.load_from_checkpoint(
            path, map_location="cpu", weights_only=True, load_pretrained=False, load_parents=False
        )
        if parent.stage != k:
            raise ConfigError(
                f"{path} is a stage-{parent.stage} checkpoint, expected stage {k} of the cascade"
            )
        net = parent.net.eval().requires_grad_(False)
        chain.append(ChainStage(k, net, parent.sigma, parent.min_crop))
    return chain
