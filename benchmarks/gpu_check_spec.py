"""What `benchmarks.gpu_check` measures and against what: the reference recipes, the targets, the
sweep, the tiny dry-run sizes, and its `Step` record."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from visionlab.keys import tasks_available

REPO = Path(__file__).resolve().parents[1]
#: every task (one per conf/task/*.yaml), in the order the tables list them
TASKS = tuple(tasks_available())
#: the whole check must fit in this many seconds on an H200 (the shell enforces it)
TOTAL_BUDGET_S = 480
DRY_TOTAL_BUDGET_S = 1800

#: the reference recipes (paper input sizes) per task, as in benchmarks/README.md (a task without one
#: is measured at its defaults only)
REFERENCE = {
    "finetune": "finetune_alexnet",
    "pose": "pose_augmented",
    "defect": "defect_ae",
    "segment": "segment_fcn_baseline",
    "embed": "embed_mnist",
}
#: the task whose compile=true is measured against eager (at its GPU defaults)
COMPILE_TASK = "pose"
#: the metric each recipe row reports (the first bar of benchmarks/results.py per task)
HEADLINE = {
    "finetune": "test/acc",
    "pose": "test/pcp/mean",
    "defect": "test/image_auroc",
    "segment": "test/miou",
    "embed": "test/acc",
}
#: pipeline efficiency (b/a) targets; every other task gets DEFAULT_EFFICIENCY
EFFICIENCY_TARGET = {"pose": 0.9, "defect": 0.9}
DEFAULT_EFFICIENCY = 0.8
OVERHEAD_TARGET = 0.97
SWEEP_SPEEDUP_TARGET = 3.0

#: the GPU sweep: 4 batch sizes x 2 dropouts = 8 embed jobs of one epoch
SWEEP = ["data.batch_size=64,128,256,512", "model.dropout=0.1,0.5", "trainer.max_epochs=1"]
SWEEP_JOBS = 8
DRY_SWEEP = ["data.batch_size=16,32", "model.dropout=0.5", "trainer.max_epochs=1"]
DRY_SWEEP_JOBS = 2
RECIPE_EPOCHS = 2

#: tiny settings per task for --dry-run (the same sizes as the tests use; none for a task not listed)
DRY: dict[str, list[str]] = {
    "finetune": ["data.image_size=32", "data.synthetic.image_size=32",
                 "data.synthetic.per_class={train: 6, val: 3, test: 3}", "data.batch_size=8"],
    "pose": ["data.image_size=64", "model.width=0.125", "data.synthetic.num_images=48",
             "data.train_count=24", "data.val_fraction=0.25", "data.batch_size=8"],
    "defect": ["data.synthetic={num_train: 20, num_test_good: 4, num_test_per_defect: 4, size: 64, seed: 0}",
               "data.val_fraction=0.2", "model.input_size=32", "model.channels=[8,16,32]",
               "model.bottleneck=16", "data.batch_size=8"],
    "segment": ["data.synthetic={num_images: 24, size: 64, seed: 0, val_fraction: 0.25}", "data.image_size=32",
                "data.batch_size=6", "model.encoder_stages=4", "model.decoder_channels=[32,16,16,8,8]"],
    "embed": ["data.synthetic={num_train: 400, num_test: 100, seed: 0}",
              "projector.digits=20"],
}  # fmt: skip
#: extra tiny settings of an experiment in --dry-run (AlexNet needs at least 63 px; the kornia recipe's
#: loader only slices cached images, so its 4 workers are left out on the CPU)
DRY_EXPERIMENT: dict[str, list[str]] = {
    "finetune_alexnet": ["data.image_size=64"],
    "pose_augmented_gpu": ["data.num_workers=0"],
}
#: what every dry-run job adds: one worker at most (the test machine has 1-2 cores)
DRY_COMMON = ["data.num_workers=0"]


@dataclass
class Step:
    """One command of the check: its name, the report section it feeds, its time budget on the GPU
    machine (the shell's `timeout`), the argv and extra environment."""

    name: str
    section: str
    budget_s: int
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    #: what the step writes, removed before it runs (so an earlier run's files never pass for its own)
    clean: list[str] = field(default_factory=list)

    def shell(self) -> str:
        """The step as one shell command line (its outputs removed first, environment first)."""
        env = [f"{k}={shlex.quote(v)}" for k, v in self.env.items()]
        command = " ".join([*(["env", *env] if env else []), shlex.join(self.argv)])
        return f"rm -rf -- {' '.join(map(shlex.quote, self.clean))} && {command}" if self.clean else command
