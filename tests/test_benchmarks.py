"""Smoke test of `python -m benchmarks.throughput`: its core runs one tiny task end to end and returns
the three img/s numbers and the two ratios (the numbers themselves are measured on a GPU, not here)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks.common import overrides_for
from benchmarks.throughput import Settings, markdown_table, measure_task, report

#: the embed task on the same tiny generated digits as tests/test_embed.py (the session's data_dir holds
#: one generated set per task, so the synthetic parameters must match that file's)
TINY_EMBED = [
    "data.synthetic={num_train: 400, num_test: 100, seed: 0}",
    "data.num_workers=0",
    "trainer.enable_progress_bar=false",
    "+trainer.enable_model_summary=false",
    "projector.digits=20",
]


def test_throughput_measures_bound_real_and_loop(data_dir: Path) -> None:
    settings = Settings(
        steps=3,
        warmup=2,
        repeats=2,
        batch_size=16,
        trainer="cpu",
        overrides=[*TINY_EMBED, f"paths.data_dir={data_dir}", "pose:data.image_size=64"],
    )
    result = measure_task("embed", settings, log=lambda text: None)

    assert result.skipped is None
    assert result.model == "mnist_net"
    assert result.input_shape == [1, 28, 28] and result.batch_size == 16
    for value in (result.bound, result.real, result.loop):
        assert math.isfinite(value) and value > 0
    assert {k: len(v) for k, v in result.repeats.items()} == {"bound": 2, "real": 2, "loop": 2}
    assert math.isclose(result.pipeline_efficiency, result.real / result.bound)
    assert math.isclose(result.framework_overhead, result.real / result.loop)
    pairs = [r / c for r, c in zip(result.repeats["real"], result.repeats["loop"], strict=True)]
    assert result.paired_overheads == pairs  # each repeat's real over the loop run right after it

    doc = json.loads(json.dumps(report([result], settings, "python -m benchmarks.throughput")))
    assert {"device", "torch", "lightning", "date", "command", "settings"} <= set(doc)
    assert doc["peak_rss_mib"] is None or doc["peak_rss_mib"] > 100  # the whole process, in MiB
    task = doc["tasks"]["embed"]
    assert task["pipeline_efficiency"] > 0 and task["framework_overhead"] > 0
    assert task["paired_overheads"] == pytest.approx(pairs)
    assert "| embed | mnist_net | 1x28x28 | 16 |" in markdown_table([result])


def test_task_prefixed_overrides_apply_to_their_task_only() -> None:
    given = ["data.num_workers=0", "pose:data.image_size=220", "data.synthetic.per_class={train: 6}"]
    assert overrides_for("pose", given) == ["data.num_workers=0", "data.image_size=220", given[2]]
    assert overrides_for("defect", given) == ["data.num_workers=0", given[2]]


def test_augment_benchmark_times_both_recipes_and_each_gpu_op(tmp_path: Path) -> None:
    from benchmarks.augment import main

    out = tmp_path / "aug.json"
    argv = [
        "--size",
        "32",
        "--batch",
        "4",
        "--samples",
        "8",
        "--steps",
        "1",
        "--repeats",
        "1",
        "--device",
        "cpu",
    ]
    assert main([*argv, "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    ops = [r["ops"] for r in rows]
    assert (
        ops[:2] == ["whole recipe", "whole recipe"] and "RandomGaussianNoise" in ops and "RandomAffine" in ops
    )
    assert all(r["images_per_second"] > 0 for r in rows)


def test_scaling_measures_each_size_and_cache_setting_in_its_own_process(tmp_path: Path) -> None:
    """`python -m benchmarks.scaling`: one row per (size, cache) with img/s and the process's peak RSS."""
    from benchmarks.scaling import main

    out = tmp_path / "out"
    args = ["--sizes", "40", "--cache", "true,false", "--steps", "1", "--warmup", "1", "--repeats", "1"]
    assert main([*args, "--data-dir", str(tmp_path / "data"), "--out", str(out), "data.image_size=64"]) == 0

    doc = json.loads((out / "scaling.json").read_text())
    assert [(r["images"], r["cache"]) for r in doc["rows"]] == [(40, True), (40, False)]
    for row in doc["rows"]:
        assert row["real"] > 0 and row["loop"] > 0
        assert 100 < row["peak_rss_mib"] < 64 * 1024  # a whole Python + torch process, in MiB
    assert "| 40 | false |" in (out / "scaling.md").read_text()


def test_scaling_refuses_a_malformed_list() -> None:
    from benchmarks.scaling import parse_list

    assert parse_list("1000, 4000", int, "--sizes") == [1000, 4000]
    assert parse_list("false", bool, "--cache") == [False]
    with pytest.raises(ValueError, match="--sizes '1k'"):
        parse_list("1k", int, "--sizes")
    with pytest.raises(ValueError, match="true/false"):
        parse_list("yes", bool, "--cache")
