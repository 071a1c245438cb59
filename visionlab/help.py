"""The `--help` page of train.py and evaluate.py, read from the config files (the tasks, config groups
and top-level keys with their comments), so it stays true to conf/ and needs no config composition."""

from __future__ import annotations

import re
import textwrap

from visionlab.keys import CONF_DIR, tasks_available

DOCS_DIR = CONF_DIR.parent / "docs"
_WIDTH = 100
#: groups a user picks from; hydra/ is Hydra's own (see --hydra-help)
_HIDDEN_GROUPS = ("hydra",)

USAGE = {
    "train": "python train.py task=<task> [group=option ...] [key=value ...]",
    "evaluate": "python evaluate.py task=<task> ckpt_path=<file.ckpt> [split=test|val] [key=value ...]",
}
#: (command, what it does); tests compose each one, so they stay valid
EXAMPLES = {
    "train": [
        ("python train.py task=embed", "the demo: digits, then unseen Greek letters by nearest neighbour"),
        ("python train.py task=segment debug=limit", "a quick pass through the whole loop"),
        ("python train.py task=pose trainer.max_epochs=5 data.batch_size=16", "any key of the config"),
        ("python train.py task=finetune experiment=finetune_cpu", "a recorded recipe (conf/experiment/)"),
        ("python train.py -m task=finetune optimizer.lr=1e-3,3e-4", "a sweep: one job per value"),
        ("python train.py task=pose --cfg job", "print the composed config instead of running"),
    ],
    "evaluate": [
        ("python evaluate.py task=finetune ckpt_path=outputs/finetune/<run>/checkpoints/best.ckpt", ""),
        ("python evaluate.py task=segment ckpt_path=<file.ckpt> split=val", "the validation split"),
    ],
}


def help_text(entry: str = "train") -> str:
    """The whole `--help` page of `entry` ("train" or "evaluate")."""
    entry = entry if entry in USAGE else "train"
    parts = [
        f"usage: {USAGE[entry]}",
        textwrap.fill(
            f"{len(tasks())} vision tasks on PyTorch Lightning, configured with Hydra (conf/). Each run writes "
            "outputs/<task>/<date>_<time>/: checkpoints/, tensorboard/, metrics.json, train.log.",
            _WIDTH,
        ),
        _section("tasks (task=<name>, conf/task/<name>.yaml)", _task_lines()),
        _section("config groups (group=option)", _group_lines()),
        _section(f"keys (conf/{entry}.yaml; every other key: --cfg job prints them)", _key_lines(entry)),
        _section("examples", [f"{cmd}\n      {what}" if what else cmd for cmd, what in EXAMPLES[entry]]),
        textwrap.fill(
            "more: README.md (quick start, configuration, sweeps, TensorBoard, troubleshooting), "
            "docs/<task>.md, docs/adding-a-task.md; Hydra's own flags: --hydra-help",
            _WIDTH,
        ),
    ]
    return "\n\n".join(parts) + "\n"


def tasks() -> list[str]:
    """The task names: one per conf/task/*.yaml, in their `task_order`."""
    return tasks_available(CONF_DIR)


def _section(title: str, lines: list[str]) -> str:
    """A titled block; single lines wider than the page are wrapped under their start."""
    body = [
        textwrap.fill(line, _WIDTH, initial_indent="  ", subsequent_indent="      ", break_on_hyphens=False)
        if "\n" not in line
        else "  " + line
        for line in lines
    ]
    return f"{title}:\n" + "\n".join(body)


def _task_lines() -> list[str]:
    """Each task with the first sentence of its config's comment, its monitored metric and its doc."""
    width = max(len(t) for t in tasks())
    lines = []
    for task in tasks():
        text = (CONF_DIR / "task" / f"{task}.yaml").read_text()
        monitor = re.search(r"^monitor:\s*\n\s+metric:\s*(\S+)", text, re.M)
        extra = [f"monitor {monitor.group(1)}"] if monitor else []
        if (DOCS_DIR / f"{task}.md").is_file():
            extra.append(f"docs/{task}.md")
        about = _first_sentence(_leading_comment(text)) + (f" ({'; '.join(extra)})" if extra else "")
        wrapped = textwrap.wrap(about, _WIDTH - 4 - width)
        lines.append(f"{task:<{width}}  " + f"\n  {'':<{width}}  ".join(wrapped))
    return lines


def _group_lines() -> list[str]:
    """Each config group (a folder of conf/) with its options."""
    groups = sorted(d for d in CONF_DIR.iterdir() if d.is_dir() and d.name not in _HIDDEN_GROUPS)
    lines = []
    for group in groups:
        options = sorted(p.stem for p in group.glob("*.yaml"))
        if options:
            lines.append(f"{group.name}: " + ", ".join(options))
    return lines


def _key_lines(entry: str) -> list[str]:
    """The entry config's top-level keys with the first sentence of the comment above each."""
    lines, comment = [], []
    for line in (CONF_DIR / f"{entry}.yaml").read_text().splitlines():
        if line.startswith("#"):
            comment.append(line.lstrip("# "))
            continue
        key = re.match(r"^([a-z_]+):", line)
        if key and key.group(1) != "defaults":
            about = textwrap.wrap(
                _first_sentence(" ".join(comment)), _WIDTH - 14, break_on_hyphens=False
            ) or [""]
            lines.append(f"{key.group(1):<10}  " + "\n              ".join(about))
        comment = [] if not line.startswith(" ") else comment
    return lines


def _leading_comment(text: str) -> str:
    """The comment block at the top of a config file, without Hydra's `# @package` line."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        if not line.startswith("# @package"):
            lines.append(line.lstrip("# "))
    return " ".join(lines)


def _first_sentence(text: str) -> str:
    """Text up to the first full stop that ends a sentence (not the one of 'e.g.')."""
    match = re.search(r"(?<!e\.g)(?<!i\.e)\.(\s|$)", text)
    return text[: match.start() + 1] if match else text
