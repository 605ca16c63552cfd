"""The `mixupe` command line: help, config files and overrides, exit codes, end to end."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def test_clean_fraction_and_cutmix_axes_from_the_command_line(capsys, tmp_path: Path):
    runs = str(tmp_path / "runs")
    for argv, expected in (
        (["--method", "mixupe", "--clean-fraction", "0.25"],
         TrainConfig(method="mixupe", clean_fraction=0.25)),
        (["--method", "cutmix", "--cutmix-axes", "3"], TrainConfig(method="cutmix",
                                                                   cutmix_axes=(3,))),
        (["--method", "cutmix", "--cutmix-axes", "2,3"], TrainConfig(method="cutmix",
                                                                     cutmix_axes=(2, 3))),
    ):
        code, out, _ = run_cli(capsys, "train", *argv, "--runs-root", runs, "--dry-run")
        assert code == 0
        assert json.loads(out[: out.rindex("}") + 1]) == expected.to_dict()
    # a suite with --set clean_fraction: MixupE runs get their own names, the others are reused
    names = {}
    for extra in ([], ["--set", "clean_fraction=0.25"]):
        code, out, _ = run_cli(capsys, "bench", "smoke", *extra, "--runs-root", runs,
                               "--dry-run")
        assert code == 0
        names[bool(extra)] = [line.split(": ")[-1] for line in out.splitlines() if "/ seed" in line]
    for before, after in zip(names[False], names[True], strict=True):
        if "/mixupe-" in before:
            assert after.split("/")[2] == before.split("/")[2] + "-cf0.25"
        else:
            assert after == before


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
    assert pngs == [f"{stem}-{kind}.png" for kind in ("accuracy", "cost", "differences",
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


def test_data_commands_take_root_and_seed_as_options_too(capsys, tmp_path: Path):
    import mixupe.data as D

    path = tmp_path / "table.csv"
    rows = [f"{i},{(i * 7) % 5},{'ab'[i % 2]}" for i in range(40)]
    path.write_text("a,b,label\n" + "\n".join(rows) + "\n")
    expected = D.load("csv", root=path, label="label", seed=3, test_fraction=0.3)
    sizes = f"{len(expected.train)} / {len(expected.val)} / {len(expected.test)}"
    for argv in (["--option", f"root={path}", "--option", "seed=3"],
                 ["--root", str(path), "--seed", "3"],
                 ["--root", str(path), "--option", f"root={path}", "--option", "seed=3"]):
        code, out, err = run_cli(capsys, "data", "describe", "csv", "--load", *argv,
                                 "--option", "label=label", "--option", "test_fraction=0.3")
        assert code == 0, err
        assert f"train/val/test: {sizes}" in out
    code, _, err = run_cli(capsys, "data", "describe", "csv", "--load", "--root", "a.csv",
                           "--option", f"root={path}", "--option", "label=label")
    assert code == 2 and "--root a.csv and --option root=" in err and "Traceback" not in err


def test_interrupted_train_prints_a_command_that_continues_the_run(capsys, monkeypatch,
                                                                  tmp_path: Path):
    from mixupe.engine import trainer

    real = trainer._train_epoch

    def interrupted_in_epoch_2(cfg, parts, ctx, *, epoch, step, bar):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(cfg, parts, ctx, epoch=epoch, step=step, bar=bar)

    argv = ["train", "--dataset", "digits", "--epochs", "3", "--batch-size", "256",
            "--model-options", "hidden=[16]", "--runs-root", str(tmp_path), "--no-progress",
            "--overwrite"]
    monkeypatch.setattr(trainer, "_train_epoch", interrupted_in_epoch_2)
    code, _, err = run_cli(capsys, *argv)
    assert code == 130
    command = err.split("continue with: ", 1)[1].strip()
    words = shlex.split(command)
    assert words[0] == "mixupe" and "--resume" in words and "--overwrite" not in words
    trained: list[int] = []

    def recorded(cfg, parts, ctx, *, epoch, step, bar):
        trained.append(epoch)
        return real(cfg, parts, ctx, epoch=epoch, step=step, bar=bar)

    monkeypatch.setattr(trainer, "_train_epoch", recorded)
    code, out, err = run_cli(capsys, *words[1:])
    assert code == 0, err
    assert trained == [2, 3]  # resumed after epoch 1, not started again
    run_dir = Path(out.split("run: ", 1)[1].split()[0])
    assert (run_dir / "result.json").is_file()
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").open()]
    assert epochs == [1, 2, 3]


MaybeFloat = float | None  # an alias: the annotation string is "MaybeFloat"


def test_option_types_come_from_the_type_hints(monkeypatch):
    import mixupe.engine.config as config_module

    @dataclasses.dataclass(frozen=True)
    class Fields:
        # Spellings other than TrainConfig's own, which string matching would miss.
        cutoff: MaybeFloat = 1.0
        rounds: int = 3
        loud: bool = False
        parts: tuple[str, ...] | None = None
        steps: tuple[int, ...] = ()
        extra: tuple[tuple[str, Any], ...] = ()
        span: tuple[float, float] | None = None

    monkeypatch.setattr(config_module, "TrainConfig", Fields)
    parse = build_parser().parse_args
    args = parse(["train", "--cutoff", "none", "--rounds", "4", "--loud", "--parts", "a,b",
                  "--steps", "2,5", "--extra", "k=1", "--extra", "j=x"])
    assert (args.cutoff, args.rounds, args.loud) == (None, 4, True)
    assert (args.parts, args.steps, args.extra) == (("a", "b"), (2, 5), [("k", 1), ("j", "x")])
    assert parse(["train", "--cutoff", "0.5", "--parts", "none"]).cutoff == 0.5
    assert parse(["train", "--parts", "none"]).parts is None
    assert parse(["train", "--span", "0.2,0.8"]).span == (0.2, 0.8)
    assert parse(["train", "--span", "none"]).span is None
    with pytest.raises(SystemExit):  # a pair needs exactly two values
        parse(["train", "--span", "0.2"])

    @dataclasses.dataclass(frozen=True)
    class Unsupported:
        weights: dict[str, float] = dataclasses.field(default_factory=dict)

    monkeypatch.setattr(config_module, "TrainConfig", Unsupported)
    with pytest.raises(TypeError, match=r"no command-line parser for TrainConfig.weights"):
        build_parser()
