"""The `mixupe` command line: help, config files and overrides, exit codes, end to end."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mixupe.cli import build_parser, main
from mixupe.engine.config import TrainConfig


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                yield from subparsers(sub)


def test_every_option_of_every_command_has_help():
    parser = build_parser()
    commands = dict(subparsers(parser))
    assert {"train", "bench", "report", "data", "list", "describe", "prepare"} <= set(commands)
    for name, sub in [("mixupe", parser), *commands.items()]:
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)


def test_train_help_lists_every_config_field(capsys):
    code, out, _ = run_cli(capsys, "train", "--help")
    assert code == 0
    for f in dataclasses.fields(TrainConfig):
        assert f"--{f.name.replace('_', '-')}" in out, f.name
    assert "--resume" in out and "--overwrite" in out and "--config" in out


def test_config_file_with_command_line_overrides(capsys, tmp_path: Path):
    path = tmp_path / "cfg.toml"
    path.write_text('method = "mixupe"\neta = 0.5\nepochs = 7\nmilestones = [2, 4]\n'
                    'schedule = "step"\n[data_options]\nsubset = 500\n')
    code, out, _ = run_cli(capsys, "train", "--config", str(path), "--eta", "0.25",
                           "--threshold", "none", "--data-options", "val_fraction=0.2",
                           "--per-sample", "--runs-root", str(tmp_path / "runs"), "--dry-run")
    assert code == 0
    resolved = json.loads(out[: out.rindex("}") + 1])
    expected = TrainConfig(method="mixupe", eta=0.25, epochs=7, milestones=(2, 4),
                           schedule="step", threshold=None, per_sample=True,
                           data_options={"subset": 500, "val_fraction": 0.2})
    assert resolved == expected.to_dict()
    assert f"run directory: {tmp_path / 'runs' / expected.run_name()}" in out
    # A run's own config.json is a valid --config file.
    saved = tmp_path / "config.json"
    saved.write_text(json.dumps({"config": expected.to_dict(), "environment": {}}))
    code, out2, _ = run_cli(capsys, "train", "--config", str(saved), "--dry-run",
                            "--runs-root", str(tmp_path / "runs"))
    assert code == 0 and json.loads(out2[: out2.rindex("}") + 1]) == expected.to_dict()


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (["train", "--method", "nope", "--dry-run"], "method='nope' is not supported"),
        (["train", "--config", "missing.toml", "--dry-run"], "does not exist"),
        (["train", "--epochs", "x"], "invalid int value"),
        (["bench", "nosuch"], "neither a built-in suite nor an existing file"),
        (["bench", "smoke", "--set", "epoch=2", "--dry-run"], r"unknown option\(s\) \['epoch'\]"),
        (["bench", "smoke", "--datasets", "mnist", "--dry-run"], r"--datasets \['mnist'\] not in"),
        (["data", "describe", "nope"], "unknown dataset 'nope'"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_and_config_errors_exit_2_with_a_message_and_no_traceback(capsys, argv, pattern):
    import re

    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert re.search(pattern, err), err
    assert "Traceback" not in err


def test_report_on_missing_or_empty_directory(capsys, tmp_path: Path):
    code, _, err = run_cli(capsys, "report", str(tmp_path / "none"))
    assert code == 2 and "does not exist" in err and "mixupe bench quick" in err
    code, _, err = run_cli(capsys, "report", str(tmp_path))
    assert code == 2 and "holds no runs" in err


def test_existing_run_needs_resume_or_overwrite_and_divergence_exits_3(capsys, tmp_path: Path):
    root = str(tmp_path / "runs")
    common = ["train", "--dataset", "digits", "--epochs", "1", "--batch-size", "256",
              "--runs-root", root, "--no-progress", "--device", "cpu"]
    code, out, _ = run_cli(capsys, *common)
    assert code == 0 and "test: acc" in out
    code, _, err = run_cli(capsys, *common)
    assert code == 2 and "--resume" in err and "--overwrite" in err
    code, out, _ = run_cli(capsys, *common, "--resume")  # complete: returns its result
    assert code == 0 and "test: acc" in out
    diverging = [*common, "--optimizer", "sgd", "--lr", "1e12"]
    code, _, err = run_cli(capsys, *diverging)
    assert code == 3 and "non-finite" in err and "Traceback" not in err
    cfg = TrainConfig(dataset="digits", epochs=1, batch_size=256, optimizer="sgd", lr=1e12)
    assert (Path(root) / cfg.run_name() / "failed.json").is_file()


def test_only_rank_zero_prints_under_torchrun(capsys, monkeypatch, tmp_path: Path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    code, out, _ = run_cli(capsys, "train", "--dry-run", "--runs-root", str(tmp_path))
    assert code == 0 and out == ""
    monkeypatch.setenv("RANK", "0")
    code, out, _ = run_cli(capsys, "train", "--dry-run", "--runs-root", str(tmp_path))
    assert code == 0 and "run directory" in out


def test_bench_smoke_end_to_end_then_report(capsys, tmp_path: Path):
    root = tmp_path / "runs"
    argv = ["bench", "smoke", "--runs-root", str(root), "--seeds", "0", "1", "--set", "epochs=1",
            "--no-progress"]
    code, out, err = run_cli(capsys, "bench", "smoke", "--runs-root", str(root), "--dry-run",
                             "--seeds", "0", "1", "--set", "epochs=1")
    assert code == 0 and "[missing ]" in out and not root.joinpath("_suites").exists()
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    # 1 selection seed: ERM, Mixup and 2 MixupE points, then seed 1 of the 3 chosen points.
    assert "7 trained, 0 already done, 0 diverged" in err
    assert "| digits | MixupE v3 | eta=" in out and "Δ acc vs Mixup" in out
    report = root / "report" / "report.md"
    assert report.read_text().strip() == out.strip()
    pngs = sorted(p.name for p in (root / "report").glob("*.png"))
    # overrides run as a suite variant of their own name (its manifest, its plots)
    stem = "smoke-set-epochs-1-seeds-0-1"
    assert pngs == [f"{stem}-{kind}.png" for kind in ("accuracy", "differences",
                                                       "learning-curves", "reliability")]
    for png in (root / "report").glob("*.png"):
        assert png.stat().st_size > 10_000
    code, _, err = run_cli(capsys, *argv)
    assert code == 0 and "0 trained, 7 already done" in err
    code, out, _ = run_cli(capsys, "report", str(root), "--out", str(tmp_path / "rep"))
    assert code == 0 and "| digits | ERM |" in out
    assert (tmp_path / "rep" / "report.md").is_file()
    assert (tmp_path / "rep" / f"{stem}-accuracy.png").is_file()


def test_python_dash_m_entry_point():
    done = subprocess.run([sys.executable, "-m", "mixupe", "bench", "--help"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0
    assert "--dry-run" in done.stdout and "resum" in done.stdout
