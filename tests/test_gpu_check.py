"""`bash benchmarks/gpu_check.sh`: its options and messages, the wheel path, the time limits and the
report, checked fast; every command line of the GPU plan composed; the whole dry run as a slow test."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from benchmarks import gpu_check, gpu_check_md

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
VENV_SITE = Path(next(p for p in sys.path if p.endswith("site-packages")))


def run_script(
    *args: str, env: dict[str, str] | None = None, timeout: int = 120
) -> subprocess.CompletedProcess:
    """`bash benchmarks/gpu_check.sh ARGS` from the repository root, output captured."""
    full_env = {**os.environ, "GPU_CHECK_PYTHON": sys.executable, **(env or {})}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=full_env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def test_help_names_every_option_and_no_developer_paths() -> None:
    result = run_script("--help")
    assert result.returncode == 0
    for option in ("--dry-run", "--wheels", "--work", "--only", "OUTDIR", "gpu_check.json", "gpu_check.md"):
        assert option in result.stdout
    text = result.stdout + SCRIPT.read_text() + Path(gpu_check.__file__).read_text()
    assert "shared" not in text


def test_usage_errors_say_what_is_wrong(tmp_path: Path) -> None:
    assert "OUTDIR is missing" in run_script().stderr
    assert "unknown option --fast" in run_script("--fast", str(tmp_path)).stderr
    assert run_script(str(tmp_path), str(tmp_path / "b")).returncode == 2


def bare_python(tmp_path: Path, hide: tuple[str, ...]) -> Path:
    """A python that sees the project's site-packages except the `hide` packages (as a bare GPU machine
    lacks hydra and the rest): `python -S` with the other entries linked into a folder on PYTHONPATH."""
    site = tmp_path / "bare_site"
    site.mkdir()
    for entry in VENV_SITE.iterdir():
        if not entry.name.lower().startswith(hide) and entry.suffix != ".pth":
            (site / entry.name).symlink_to(entry)
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\nexport PYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{site}"\n'
                       f'exec {sys.executable} -S "$@"\n')  # fmt: skip
    wrapper.chmod(0o755)
    return wrapper


def fake_wheel(folder: Path, name: str) -> Path:
    """A minimal pure wheel of a package `name` that re-exports nothing (enough for find_spec)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-9.9.9-py3-none-any.whl"
    info = f"{name}-9.9.9.dist-info"
    files = {
        f"{name}/__init__.py": "",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 9.9.9\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{p},,\n" for p in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for p, text in {**files, f"{info}/RECORD": record}.items():
            z.writestr(p, text)
    return path


def test_missing_packages_are_named_in_one_line_then_installed_from_wheels(tmp_path: Path) -> None:
    python = bare_python(tmp_path, hide=("kornia",))
    env = {"GPU_CHECK_PYTHON": str(python), "GPU_CHECK_WHEELS": ""}
    out, work = str(tmp_path / "out"), str(tmp_path / "work")

    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_script("--dry-run", "--wheels", str(empty), "--work", work, out, env=env)
    assert result.returncode == 2 and "no .whl files" in result.stderr and "kornia" in result.stderr
    if not (ROOT / ".whl").exists():  # without --wheels a ./.whl folder would be used
        result = run_script("--dry-run", "--work", work, out, env=env)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert (
            len(lines) == 1 and "missing Python packages: kornia" in lines[0] and "--wheels DIR" in lines[0]
        )

    wheels = fake_wheel(tmp_path / "wheels", "kornia").parent
    result = run_script("--dry-run", "--wheels", str(wheels), "--work", work, "--only", "none", out, env=env)
    assert result.returncode == 0, result.stderr
    assert "installing 1 wheels" in result.stdout
    assert (Path(work) / "site" / "kornia" / "__init__.py").is_file()
    assert json.loads((Path(out) / "gpu_check.json").read_text())["dry_run"] is True


def test_a_step_past_its_limit_or_failing_leaves_the_others_results(tmp_path: Path) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    throughput = {"device": "cpu", "command": "python -m benchmarks.throughput", "tasks": {"embed": {
        "model": "mnist_net", "input_shape": [1, 28, 28], "batch_size": 64, "precision": "32-true",
        "num_workers": 0, "augment": False, "gpu_augment": False, "bound": 100.0, "real": 95.0, "loop": 96.0,
        "pipeline_efficiency": 0.95, "framework_overhead": 0.99, "skipped": None}}}  # fmt: skip
    fixture = tmp_path / "tp.json"
    fixture.write_text(json.dumps(throughput))
    steps = [
        ("throughput_default", 30, f"cp {fixture} {out}/steps/throughput_default.json"),
        ("sweep_sequential", 1, "sleep 20"),
        ("recipe_pose", 30, "echo 'ValueError: broken recipe'; exit 3"),
        ("recipe_embed", 30, "echo fine"),
    ]
    plan = tmp_path / "plan.tsv"
    plan.write_text("".join(f"{n}\t{b}\t{c}\n" for n, b, c in steps))
    result = run_script("--dry-run", "--work", str(work), str(out), env={"GPU_CHECK_PLAN": str(plan)})
    assert result.returncode == 1, result.stderr

    doc = json.loads((out / "gpu_check.json").read_text())
    status = {name: s["status"] for name, s in doc["steps"].items()}
    assert status == {"throughput_default": "ok", "sweep_sequential": "timeout", "recipe_pose": "failed",
                      "recipe_embed": "ok"}  # fmt: skip
    assert doc["steps"]["recipe_pose"]["error"] == "ValueError: broken recipe"
    assert doc["steps"]["sweep_sequential"]["wall_s"] < 15
    assert doc["throughput_default"]["rows"][0]["b_c"] == 0.99
    md = (out / "gpu_check.md").read_text()
    assert "| embed | mnist_net | 1x28x28 | 64 |" in md and "stopped" not in md
    assert "| sweep_sequential | timeout |" in md

    rerun = run_script("--dry-run", "--work", str(work), "--only", "recipe_pose", str(out),
                       env={"GPU_CHECK_PLAN": str(plan)})  # fmt: skip
    steps_after = json.loads((out / "gpu_check.json").read_text())["steps"]
    assert rerun.returncode == 1 and set(steps_after) == set(status)  # the others' records kept

    no_time = run_script("--dry-run", "--work", str(work), str(tmp_path / "out2"),
                         env={"GPU_CHECK_PLAN": str(plan), "GPU_CHECK_TOTAL_S": "12"})  # fmt: skip
    skipped = json.loads((tmp_path / "out2" / "gpu_check.json").read_text())["steps"]
    assert no_time.returncode == 1 and {s["status"] for s in skipped.values()} == {"skipped: no time left"}


def fake_results(out: Path, work: Path) -> None:
    """Step files of a GPU run as the steps write them: throughput JSONs, sweep job.json, metrics.json."""
    (out / "steps").mkdir(parents=True)
    meta = {"dry_run": False, "work": str(work), "budget_s": 480, "date": "2026-12-02", "command": "bash x"}
    (out / "meta.json").write_text(json.dumps(meta))

    def task(real: float, bound: float, loop: float, **extra: object) -> dict[str, object]:
        return {"model": "m", "input_shape": [3, 8, 8], "batch_size": 8, "precision": "bf16-mixed",
                "num_workers": 0, "augment": False, "gpu_augment": False, "bound": bound, "real": real,
                "loop": loop, "pipeline_efficiency": real / bound, "framework_overhead": real / loop,
                "skipped": None, **extra}  # fmt: skip

    default = {"pose": task(92, 100, 96), "defect": task(85, 100, 86), "embed": task(85, 100, 86)}
    (out / "steps" / "throughput_default.json").write_text(json.dumps({"tasks": default}))
    (out / "steps" / "throughput_reference.json").write_text(
        json.dumps({"tasks": {"pose": task(40, 100, 41)}})
    )
    (out / "steps" / "pose_gpu_augment.json").write_text(json.dumps({"tasks": {"pose": task(80, 100, 81)}}))
    (out / "steps" / "compile.json").write_text(json.dumps({"tasks": {"pose": task(138, 150, 140)}}))
    for name, wall in (("sweep_sequential", 60.0), ("sweep_packed", 15.0)):
        for job in range(gpu_check.SWEEP_JOBS):
            (work / "sweep" / name / str(job)).mkdir(parents=True)
            record = {"status": "completed", "wall_s": wall / 8, "error": None}
            (work / "sweep" / name / str(job) / "job.json").write_text(json.dumps(record))
    (work / "runs" / "embed").mkdir(parents=True)
    (work / "runs" / "embed" / "metrics.json").write_text(json.dumps({"test/acc": 0.97, "time/train_s": 5.0}))
    steps = {n: {"status": "ok", "wall_s": w, "log": f"logs/{n}.log"}
             for n, w in (("sweep_sequential", 60.0), ("sweep_packed", 15.0), ("recipe_embed", 9.0))}  # fmt: skip
    (out / "steps.json").write_text(json.dumps(steps))


def test_report_judges_every_row_against_its_target(tmp_path: Path) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    fake_results(out, work)
    doc = gpu_check.write_report(out)

    rows = {r["task"]: r for r in doc["throughput_default"]["rows"]}
    assert (rows["pose"]["b_a_result"], rows["pose"]["b_c_result"]) == ("pass", "fail")  # 0.92, 0.96
    assert rows["pose"]["b_c"] == pytest.approx(92 / 96)
    assert (rows["defect"]["b_a_result"], rows["embed"]["b_a_result"]) == (
        "fail",
        "pass",
    )  # 0.85: < 0.9, >= 0.8
    assert doc["embed_sweep"]["speedup"] == pytest.approx(4.0) and doc["embed_sweep"]["result"] == "pass"
    pose = doc["pose_augmentation"]
    assert pose["gpu_augment_speedup"] == pytest.approx(2.0) and pose[
        "compile_speedup_real"
    ] == pytest.approx(1.5)
    recipes = {r["task"]: r for r in doc["recipes"]["rows"]}
    assert recipes["embed"]["value"] == 0.97 and recipes["pose"]["result"] == "missing"

    md = (out / "gpu_check.md").read_text()
    for title in gpu_check_md.SECTION_TITLES.values():
        assert f"## {title}" in md
    assert "dry run" not in md.lower()
    assert "Speedup sequential / packed: 4.00x (target >= 3x): **pass**" in md


def _first_values(argv: list[str]) -> list[str]:
    """A sweep's overrides with each comma list cut to its first value (one job's overrides)."""
    return [re.sub(r"=([^,{}\[\]]+),.*$", r"=\1", a) if "," in a and "{" not in a and "[" not in a else a
            for a in argv]  # fmt: skip


@pytest.mark.parametrize("dry_run", [False, True], ids=["gpu", "dry-run"])
def test_every_command_of_the_plan_composes(tmp_path: Path, dry_run: bool) -> None:
    """Each train.py command composes (the packed launcher included), each throughput command composes
    for each of its tasks, and every option given to a benchmark module is one it defines."""
    from hydra import compose, initialize_config_dir

    from benchmarks.common import compose_task, overrides_for

    steps = gpu_check.plan(tmp_path / "out", tmp_path / "work", dry_run)
    assert [s.name for s in steps][:2] == ["data", "throughput_default"] and len(steps) == 13
    for step in steps:
        argv = step.argv
        assert argv[0] == sys.executable and step.budget_s > 0
        if argv[1] == "train.py":
            overrides = _first_values([a for a in argv[2:] if a != "-m"])
            with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
                cfg = compose("train", overrides=overrides, return_hydra_config=True)
            assert cfg.trainer.accelerator == ("cpu" if dry_run else "gpu")
            if "hydra/launcher=packed" in argv:
                assert cfg.hydra.launcher.n_jobs == (2 if dry_run else 8)
            continue
        module = argv[2]
        source = (ROOT / (module.replace(".", "/") + ".py")).read_text()
        options = [a for a in argv[3:] if a.startswith("--")]
        assert all(f'"{o}"' in source for o in options), (step.name, options)
        if module == "benchmarks.throughput":
            tasks = argv[argv.index("--tasks") + 1].split(",")
            given = [a for a in argv[3:] if "=" in a and not a.startswith("--")]
            trainer = "cpu" if dry_run else "gpu"
            for task in tasks:
                cfg, _ = compose_task(task, [f"trainer={trainer}", *given], tmp_path / "run")
                assert cfg.task_name == task and str(cfg.trainer.precision) == (
                    "32-true" if dry_run else "bf16-mixed"
                )
                assert len(overrides_for(task, given)) >= 1
        assert ("TORCH_COMPILE_DISABLE" in step.env) == (dry_run and step.name == "compile")


@pytest.mark.slow
def test_dry_run_runs_every_step_and_writes_every_section(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_script("--dry-run", "--work", str(tmp_path / "work"), str(out), timeout=1800,
                        env={"OMP_NUM_THREADS": "1"})  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    doc = json.loads((out / "gpu_check.json").read_text())
    assert doc["dry_run"] is True
    assert {s["status"] for s in doc["steps"].values()} == {"ok"} and len(doc["steps"]) == 13
    for section in ("throughput_default", "throughput_reference"):
        rows = doc[section]["rows"]
        assert [r["task"] for r in rows] == list(gpu_check.TASKS)
        assert all(r.get("skipped") is None and r["b_a_result"] == "dry run" for r in rows)
    assert (
        all(r["real"] for r in doc["pose_augmentation"]["rows"]) and doc["pose_augmentation"]["augment_alone"]
    )
    assert [r["completed"] for r in doc["embed_sweep"]["rows"]] == [2, 2]
    assert all(r["value"] is not None and r["result"] == "dry run" for r in doc["recipes"]["rows"])
    md = (out / "gpu_check.md").read_text()
    for title in gpu_check_md.SECTION_TITLES.values():
        assert f"## {title}" in md
    assert md.count("dry run") >= 20
