"""The command line as a new user meets it: a mistake is one `error:` line on stderr naming the key or
option (with the valid ones or the nearest), exit status 2, before any data work, and no run folder
left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(
    script: str, *args: str, tmp_path: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`python <script> <args>` from the project root, its data and outputs under `tmp_path`."""
    return subprocess.run(
        [
            sys.executable,
            script,
            *args,
            f"paths.data_dir={tmp_path / 'data'}",
            f"paths.output_dir={tmp_path / 'outputs'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def assert_one_error_line(result: subprocess.CompletedProcess, *expected: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for text in expected:
        assert text in lines[0]
    assert "error" not in result.stdout  # printed once, not also as a log line


@pytest.mark.parametrize(
    ("script", "args", "expected"),
    [
        (
            "evaluate.py",
            ["task=finetune"],
            ["ckpt_path is required", "python evaluate.py task=finetune ckpt_path="],
        ),
        ("train.py", ["task=nope"], ["task=nope", "defect, embed, finetune, pose, segment"]),
        ("train.py", ["task=pse"], ["did you mean task=pose?"]),
        ("train.py", ["model=resnet"], ["model=resnet", "resnet10"]),
        ("train.py", ["optimizer.lrr=0.1"], ["optimizer.lrr", "did you mean optimizer.lr?"]),
        ("train.py", ["optimizer.zzz=1"], ["optimizer.zzz", "lr, weight_decay", "+optimizer.zzz=1"]),
        ("train.py", ["optimizer.name=adamw"], ["optimizer.name=adamw is the old form; use optimizer=adamw"]),
        (
            "train.py",
            ["scheduler.name=cosine"],
            ["scheduler.name=cosine is the old form; use scheduler=cosine"],
        ),
        ("train.py", ["optimizer._target_=os.system"], ["optimizer._target_='os.system' is not allowed"]),
        (
            "train.py",
            ["task=segment", "model.encoder=resnet34"],
            ["model.encoder=resnet34 is the old name; use model.backbone=resnet34"],
        ),
        (
            "train.py",
            ["task=segment", "model.freeze_encoder_epochs=2"],
            ["model.freeze_encoder_epochs=2 is the old name; use model.freeze_backbone_epochs=2"],
        ),
        (
            "train.py",
            ["task=segment", "model.encoder_lr_ratio=0.1"],
            ["model.encoder_lr_ratio=0.1 is the old name; use model.backbone_lr_ratio=0.1"],
        ),
        (
            "train.py",
            ["model.freeze_backbone=true"],
            ["model.freeze_backbone=true is the old form; use model.freeze_backbone_epochs=all"],
        ),
        (
            "train.py",
            ["model.freeze_backbone=true", "model.unfreeze_epoch=2"],
            ["model.freeze_backbone=true is the old form; use model.freeze_backbone_epochs=all"],
        ),
        (
            "train.py",
            ["model.unfreeze_epoch=2"],
            ["model.unfreeze_epoch=2 is the old form; use model.freeze_backbone_epochs=2"],
        ),
        (
            "train.py",
            ["task=defect", "model.name=autoencoder"],
            ["model.name=autoencoder is the old name; use model.arch=autoencoder"],
        ),
        (
            "train.py",
            ["optimizer=adam", "+optimizer.momentum=0.9"],
            ["optimizer.momentum is not a key of torch.optim.Adam"],
        ),
        (
            "train.py",
            ["+callbacks.swa._target_=os.system"],
            ["callbacks.swa._target_='os.system' is not allowed"],
        ),
        (
            "train.py",
            [
                "+callbacks.swa._target_=lightning.pytorch.callbacks.StochasticWeightAveraging",
                "+callbacks.swa.swa_lrz=0.01",
            ],
            ["callbacks.swa.swa_lrz is not a key of", "did you mean callbacks.swa.swa_lrs?"],
        ),
        ("train.py", ["trainer.max_epochs=[1"], ["trainer.max_epochs=[1"]),
        ("train.py", ["max_epochs"], ["'max_epochs'"]),
    ],
)
def test_hydra_mistakes_are_one_line_and_exit_2(
    tmp_path: Path, script: str, args: list[str], expected: list[str]
) -> None:
    result = run_cli(script, *args, tmp_path=tmp_path)
    assert_one_error_line(result, *expected)
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*"))
    assert not (tmp_path / "data").exists()


def test_unknown_added_key_is_refused_before_data_and_leaves_no_run_folder(tmp_path: Path) -> None:
    result = run_cli("train.py", "+optimizer.lrr=0.1", tmp_path=tmp_path)
    assert_one_error_line(result, "optimizer.lrr", "did you mean optimizer.lr?")
    assert not (tmp_path / "data").exists()  # refused before any data was generated
    assert not any((tmp_path / "outputs").rglob("*"))  # no stub run folder


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+optimizer.lrr=0.1", "optimizer.lrr is not a key of torch.optim.AdamW; did you mean optimizer.lr?"),
        ("+trainer.max_epoch=3", "did you mean trainer.max_epochs?"),
        (
            "+scheduler.pct_strat=0.2",
            "scheduler.pct_strat is not a key of visionlab.optim.one_cycle; did you mean scheduler.pct_start?",
        ),
        ("+data.batchsize=8", "did you mean data.batch_size?"),
        ("+model.widht=2", "model.widht is not a key of"),
    ],
)
def test_unknown_keys_of_the_known_groups_are_refused_by_name(
    tmp_path: Path, override: str, message: str
) -> None:
    from tests.conftest import compose_config
    from visionlab.errors import ConfigError
    from visionlab.validation import validate_config

    cfg = compose_config("train", [override, f"paths.data_dir={tmp_path / 'data'}"])
    with pytest.raises(ConfigError, match=message.replace("?", r"\?").replace("+", r"\+")):
        validate_config(cfg)


def test_valid_added_keys_pass(tmp_path: Path) -> None:
    from tests.conftest import compose_config
    from visionlab.validation import validate_config

    validate_config(
        compose_config("train", ["+optimizer.betas=[0.9,0.99]", "+trainer.enable_model_summary=false"])
    )


def test_lightning_platform_tips_are_not_printed(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    import lightning.pytorch as pl

    import visionlab.runner  # noqa: F401  (installs the filter)

    with caplog.at_level(logging.INFO):
        pl.Trainer(logger=[], accelerator="cpu", enable_progress_bar=False, enable_model_summary=False)
        pl.Trainer(logger=False, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False)
    assert "litlogger" not in caplog.text and "litmodels" not in caplog.text
    assert "Tip" not in caplog.text


def test_a_run_prints_what_next_and_logs_its_epochs_and_a_resume_writes_only_its_folder(
    tmp_path: Path,
) -> None:
    """A tiny training through train.py: the end of the run names the best checkpoint, the test metrics
    and the next commands; train.log holds every epoch and the results; `resume=last` goes on in that
    folder and leaves no other."""
    from tests.conftest import TINY_FINETUNE

    tiny = [a if not a.startswith("trainer.max_epochs=") else "trainer.max_epochs=2" for a in TINY_FINETUNE]
    tiny = [
        a
        if not a.startswith("data.synthetic.per_class")
        else "data.synthetic.per_class={train: 2, val: 1, test: 1}"
        for a in tiny
    ]
    first = run_cli("train.py", *tiny, tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    task_dir = tmp_path / "outputs" / "finetune"
    (run,) = [p for p in task_dir.iterdir() if p.is_dir()]
    best = run / "checkpoints" / "best.ckpt"
    assert f"best checkpoint: {best} (val/acc " in first.stdout
    assert "test: test/acc " in first.stdout and "test/auroc " in first.stdout
    assert f"next: tensorboard --logdir {task_dir}" in first.stdout
    assert f"python evaluate.py task=finetune ckpt_path={best}" in first.stdout
    assert "Tip:" not in first.stdout + first.stderr  # Lightning's advertising lines
    log = (run / "train.log").read_text()
    assert "epoch 1/2 (" in log and "epoch 2/2 (" in log and "val/acc=" in log and "train/loss=" in log
    assert f"best checkpoint: {best}" in log and "test: test/acc " in log

    resumed = run_cli("train.py", *tiny, "trainer.max_epochs=3", "resume=last", tmp_path=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [p for p in task_dir.iterdir()] == [run]  # no second, empty run folder
    assert "exists and is not empty" not in resumed.stdout + resumed.stderr
    log = (run / "train.log").read_text()
    assert "resumed in this folder: " in log and "epoch 3/3 (" in log


def test_unfinished_generations_of_killed_runs_are_cleaned(tmp_path: Path) -> None:
    """A run killed while generating an embedded set leaves `.<set>.<random>/`; the next generation of
    that set removes it, and a set being generated right now by another process (its lock held) keeps its own."""
    import fcntl

    from datamodules.synthetic import ensure_generated

    for name in ("lsp_easy_abc", "voc_easy_def"):
        (tmp_path / f".{name}.lock").touch()
        (tmp_path / f".{name}.k2j4_x9q").mkdir()
        (tmp_path / f".{name}.k2j4_x9q" / "0001.png").write_bytes(b"x")
    with (tmp_path / ".voc_easy_def.lock").open("w") as busy:
        fcntl.flock(busy, fcntl.LOCK_EX)  # another process is generating this one
        ensure_generated(tmp_path / "lsp_easy_abc", lambda root: (root / "0001.png").write_bytes(b"y"))
    assert not (tmp_path / ".lsp_easy_abc.k2j4_x9q").exists()
    assert (tmp_path / ".voc_easy_def.k2j4_x9q").is_dir() and (
        tmp_path / "lsp_easy_abc" / "0001.png"
    ).is_file()


@pytest.mark.parametrize("script", ["train.py", "evaluate.py"])
def test_help_lists_every_task_group_and_key_without_composing(script: str, tmp_path: Path) -> None:
    """`--help` answers from the config files: exit 0, every task and config group, no run folder, and
    neither torch nor Lightning imported (it takes about a second, not Hydra's composition)."""
    probe = (
        "import runpy, sys; sys.argv = [sys.argv[1], '--help']; runpy.run_path(sys.argv[0], run_name='__main__'); "
        "sys.stderr.write(' '.join(m for m in ('torch', 'lightning') if m in sys.modules))"
    )
    env = {**os.environ, "VISIONLAB_OUTPUT_DIR": str(tmp_path / "out"), "VISIONLAB_DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", probe, script], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr[-2000:]
    page = result.stdout
    assert page.startswith(f"usage: python {script} task=<task>")
    for task in sorted(p.stem for p in (ROOT / "conf" / "task").glob("*.yaml")):
        assert f"\n  {task}  " in page, task
    for group in ("trainer", "model", "experiment", "debug", "logger"):
        assert f"\n  {group}: " in page, group
    assert "  ckpt_path  " in page and "README.md" in page and "docs/" in page
    assert list(tmp_path.iterdir()) == []


def test_hydra_help_template_is_the_same_page() -> None:
    """Hydra's own `--help` path (conf/hydra/default.yaml's help.template) prints the same page."""
    probe = (
        "import runpy, sys; import visionlab.cli as c; c.main = lambda f: f(); "
        "sys.argv = ['train.py', '--help']; runpy.run_path('train.py', run_name='__main__')"
    )
    via_hydra = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    direct = subprocess.run(
        [sys.executable, "train.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert via_hydra.returncode == 0 and direct.returncode == 0, via_hydra.stderr[-2000:]
    assert via_hydra.stdout.rstrip("\n") == direct.stdout.rstrip("\n")


def test_help_examples_compose() -> None:
    """Each example command of the help page is a valid command line for the configs."""
    from tests.conftest import compose_config
    from visionlab.help import EXAMPLES

    for entry, examples in EXAMPLES.items():
        for command, _ in examples:
            args = [a for a in command.split()[2:] if a not in ("-m", "--cfg", "job")]
            args = [a.replace("<file.ckpt>", "x.ckpt").replace("<run>", "run") for a in args]
            args = [a.split(",")[0] for a in args]  # a sweep's first value
            cfg = compose_config(entry, args)
            assert cfg.task_name == args[0].removeprefix("task="), command
