"""Reports: the page of a run (written by train.py itself), of a comparison and of a sweep, checked for
their structure (tables, embedded images, no external addresses) and their content."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import TINY_FINETUNE, compose_config
from visionlab.report import write_run_report
from visionlab.report.__main__ import main as report_main
from visionlab.runner import evaluate, train

SHORT = ["trainer.max_epochs=2", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1"]


class Page(HTMLParser):
    """What a browser would load and show: tables with their headers, images, scripts, links."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tables = 0
        self.headers: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.external: list[str] = []
        self._in_th = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.tables += tag == "table"
        self._in_th = tag == "th"
        if tag == "img":
            self.images.append(values.get("src") or "")
        if tag == "a":
            self.links.append(values.get("href") or "")
        for key in ("src", "href"):
            if tag in ("script", "link", "iframe", "img", "a") and re.match(
                r"(https?:)?//", values.get(key) or ""
            ):
                self.external.append(values[key] or "")

    def handle_endtag(self, tag: str) -> None:
        self._in_th = self._in_th and tag != "th"

    def handle_data(self, data: str) -> None:
        if self._in_th:
            self.headers.append(data.strip())


def check_page(path: Path) -> Page:
    """The page is self-contained: every image is an embedded PNG, no address outside the file."""
    html = path.read_text()
    page = Page(html)
    assert page.tables >= 1
    assert all(src.startswith("data:image/png;base64,") for src in page.images), page.images[:1]
    assert not page.external
    assert not re.search(r"https?://", html), re.search(r".{40}https?://.{40}", html)
    assert path.with_suffix(".md").read_text().startswith("# ")
    return page


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A tiny finetune run `a` (its report written by train()) and a copy `b` of its folder that
    differs in one setting (model.dropout) and in its test accuracy, as a second run would."""
    root = tmp_path_factory.mktemp("outputs")
    overrides = [
        *TINY_FINETUNE,
        *SHORT,
        "model.dropout=0.0",
        f"paths.data_dir={data_dir}",
        f"paths.run_dir={root / 'a'}",
    ]
    train(compose_config("train", overrides))
    shutil.copytree(root / "a", root / "b")
    config = OmegaConf.load(root / "b" / "config.yaml")
    config.model.dropout = 0.5
    (root / "b" / "config.yaml").write_text(OmegaConf.to_yaml(config))
    metrics = json.loads((root / "b" / "metrics.json").read_text())
    metrics["test/acc"] += 0.25
    (root / "b" / "metrics.json").write_text(json.dumps(metrics))
    return root


def test_a_training_run_writes_its_report(outputs: Path) -> None:
    run = outputs / "a"
    page = check_page(run / "report.html")
    assert len(page.images) >= 3  # curves, ROC, confusion matrix (from the TensorBoard figures)
    for header in ("setting", "task default", "this run", "class", "accuracy", "ROC-AUC (one vs rest)"):
        assert header in page.headers
    text = (run / "report.md").read_text()
    assert re.search(r"\| trainer\.max_epochs \| \d+ \| 2 \|", text)  # the task default, then this run's
    assert "## Accuracy per class" in text and "## Time and machine" in text
    tables = json.loads((run / "tables.json").read_text())
    assert tables["kind"] == "train" and tables["machine"]["device"] == "cpu"
    assert len(tables["tables"]["confusion"]) == len(tables["tables"]["class_names"]) == 12
    assert ["model.dropout", "null", "0.0"] in tables["settings_changed"]


def test_the_report_is_rebuilt_from_the_folder_alone(outputs: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "again.html"
    assert report_main([str(outputs / "a"), "--out", str(out)]) == 0
    assert "written:" in capsys.readouterr().out
    assert check_page(out).headers == check_page(outputs / "a" / "report.html").headers


def test_a_comparison_names_its_columns_by_what_differs(outputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp.html"
    assert report_main([str(outputs / "a"), str(outputs / "b"), "--out", str(out)]) == 0
    page = check_page(out)
    assert "model.dropout=0.0" in page.headers and "model.dropout=0.5" in page.headers
    assert "difference" in page.headers
    assert len(page.images) == 1  # the curves of both runs overlaid
    assert "../" in " ".join(page.links)  # each run's own report, linked relatively
    md = out.with_suffix(".md").read_text()
    assert re.search(r"\| test/acc \| [\d.]+ \| [\d.]+ \| \+0\.2500 \|", md), md
    assert "| time/train_s |" in md


def test_runs_of_different_tasks_are_refused_in_one_line(outputs: Path, tmp_path: Path, capsys) -> None:
    other = tmp_path / "embed_run"
    other.mkdir()
    (other / "config.yaml").write_text(OmegaConf.to_yaml({"task_name": "embed"}))
    assert report_main([str(outputs / "a"), str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the runs are of different tasks") and "\n" not in err


def test_a_folder_that_is_no_run_is_one_error_line(tmp_path: Path, capsys) -> None:
    assert report_main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().endswith("or a multirun folder")


def fake_sweep(folder: Path, source: Path) -> None:
    """A multirun folder of three jobs copied from one run's files: two completed, one failed."""
    folder.mkdir()
    (folder / "multirun.yaml").write_text(OmegaConf.to_yaml({"hydra": {"sweeper": {}}}))
    config = OmegaConf.load(source / "config.yaml")
    for job, (lr, acc) in enumerate(((0.01, 0.4), (0.1, 0.6), (1.0, None))):
        job_dir = folder / str(job)
        job_dir.mkdir(parents=True)
        (job_dir / "config.yaml").write_text(OmegaConf.to_yaml(config))
        overrides = [f"optimizer.lr={lr}"]
        record = {"job": str(job), "overrides": overrides, "wall_s": 3.0 + job, "return_value": acc}
        if acc is None:
            record.update(status="failed", error="ConfigError: optimizer.lr=1.0 is too large")
        else:
            record.update(status="completed", error="")
            (job_dir / "metrics.json").write_text(json.dumps({"val/acc": acc, "test/acc": acc - 0.1}))
            (job_dir / "report.html").write_text("<html></html>")
        (job_dir / "job.json").write_text(json.dumps(record))


def test_a_sweep_report_sorts_plots_and_links_the_best_job(outputs: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "multirun"
    fake_sweep(sweep, outputs / "a")
    assert report_main([str(sweep)]) == 0
    html = (sweep / "report.html").read_text()
    page = check_page(sweep / "report.html")
    assert 'class="sortable"' in html and "<script>" in html
    assert (sweep / "summary.csv").is_file()  # rebuilt, with the per-parameter plot
    assert len(page.images) == 1
    assert "1/report.html" in page.links  # the best job (val/acc 0.6)
    assert re.search(r'<tr class="best">\s*<td><a href="1/report.html">', html)
    assert "ConfigError: optimizer.lr=1.0 is too large" in html
    assert "optimizer.lr" in page.headers and "val/acc" in page.headers


def test_a_failing_report_is_one_warning_and_leaves_the_run_alone(tmp_path: Path, caplog) -> None:
    class Broken:
        summary_metrics = ()

        def report_tables(self) -> dict:
            raise RuntimeError("no tables")

    cfg = compose_config("train", [*TINY_FINETUNE, f"paths.run_dir={tmp_path}"])
    (tmp_path / "metrics.json").write_text('{"test/acc": 0.5}')
    write_run_report(cfg, tmp_path, Broken(), "train")
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "report not written (RuntimeError: no tables)" in warnings[0].getMessage()
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"test/acc": 0.5}
    assert not (tmp_path / "report.html").exists()


def test_an_evaluation_reports_its_checkpoint_and_links_the_training_run(
    outputs: Path, data_dir: Path
) -> None:
    ckpt = outputs / "a" / "checkpoints" / "best.ckpt"
    base = [o for o in TINY_FINETUNE if "max_epochs" not in o]
    evaluate(
        compose_config(
            "evaluate",
            [*base, f"ckpt_path={ckpt}", f"paths.data_dir={data_dir}", f"paths.run_dir={outputs / 'eval'}"],
        )
    )
    page = check_page(outputs / "eval" / "report.html")
    assert "../a/report.html" in page.links
    assert len(page.images) >= 3  # ROC, confusion matrix, the test predictions (the PNGs evaluate wrote)
    md = (outputs / "eval" / "report.md").read_text()
    assert "## Training curves" not in md and "| ckpt_path | (required) |" in md
