"""`mixupe train` options: each method's own defaults, options that cannot apply, failed starts.

Issue 23 items 1, 9 and 10.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import mixupe
from mixupe.cli import main
from mixupe.engine.config import TrainConfig


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def dry_config(capsys, tmp_path: Path, *argv: str) -> dict:
    code, out, err = run_cli(capsys, "train", *argv, "--runs-root", str(tmp_path), "--dry-run")
    assert code == 0, err
    return json.loads(out[: out.rindex("}") + 1])


def test_regmixup_defaults_are_the_library_and_paper_defaults(capsys, tmp_path):
    # Issue 23.1: `--method regmixup` alone used to train with eta 0.001 and alpha 1
    # (CE + 0.001 L_mix, effectively ERM). The library's RegMixup: eta 1, Mixup(alpha=10).
    library = mixupe.RegMixup(num_classes=2)
    cfg = dry_config(capsys, tmp_path, "--method", "regmixup")
    assert (cfg["eta"], cfg["alpha"]) == (library.eta, library.mixing.alpha) == (1.0, 10.0)
    # given values win, from a flag or from a config file
    assert dry_config(capsys, tmp_path, "--method", "regmixup", "--eta", "0.1")["eta"] == 0.1
    file = tmp_path / "cfg.toml"
    file.write_text('method = "regmixup"\nalpha = 0.5\n')
    cfg = dry_config(capsys, tmp_path, "--config", str(file))
    assert (cfg["eta"], cfg["alpha"]) == (1.0, 0.5)
    # other methods keep TrainConfig's defaults
    assert dry_config(capsys, tmp_path, "--method", "mixupe")["eta"] == TrainConfig().eta


@pytest.mark.parametrize(
    ("argv", "flag", "applies"),
    [
        (["--method", "mixup", "--clean-fraction", "0.5"], "--clean-fraction", "--method mixupe"),
        (["--method", "cutmix", "--label-alpha", "0.3"], "--label-alpha", "mixup / mixupe"),
        (["--method", "fmix", "--cutmix-axes", "1"], "--cutmix-axes", "cutmix / mixup-cutmix"),
        (["--method", "erm", "--mixer-options", "grid_sizes=[2]"], "--mixer-options",
         "every method but erm"),
        (["--method", "mixup", "--cutmix-minmax", "0.2,0.8"], "--cutmix-minmax", "cutmix"),
        (["--method", "mixup", "--cutmix-alpha", "1"], "--cutmix-alpha", "mixup-cutmix"),
        (["--method", "mixup", "--switch-prob", "0.3"], "--switch-prob", "mixup-cutmix"),
        (["--optimizer", "adamw", "--momentum", "0.5"], "--momentum", "--optimizer sgd"),
        (["--method", "mixupe", "--mixing", "fmix", "--cutmix-axes", "1"], "--cutmix-axes",
         "--method mixupe with --mixing cutmix"),
        (["--method", "resizemix", "--alpha", "0.5"], "--alpha", "--method mixup / cutmix"),
        (["--method", "mixupe", "--mixing", "resizemix", "--alpha", "0.5"], "--alpha",
         "--method mixupe with --mixing mixup"),
    ],
)
def test_options_that_do_not_apply_are_refused(capsys, tmp_path, argv, flag, applies):
    # Issue 23.9: such options used to be dropped silently, the run named as without them.
    code, _, err = run_cli(capsys, "train", *argv, "--runs-root", str(tmp_path), "--dry-run")
    assert code == 2 and "Traceback" not in err
    assert f"{flag} does not apply to this run" in err and applies in err
    assert f"drop {flag}" in err


def test_options_that_apply_are_accepted(capsys, tmp_path):
    for argv in (["--method", "mixupe", "--clean-fraction", "0.5"],
                 ["--method", "mixup-cutmix", "--switch-prob", "0.3", "--label-alpha", "0.2"],
                 ["--method", "mixupe", "--mixing", "cutmix", "--cutmix-axes", "1"],
                 ["--method", "mixup", "--eta", "0.001"]):  # its naming value: no effect
        dry_config(capsys, tmp_path, *argv)


def test_a_failed_start_leaves_no_run_directory(capsys, tmp_path):
    # Issue 23.10: FMix refuses feature vectors in its first step; the run directory it left
    # made the rerun say "already exists; pass --resume" instead of the real error.
    runs = tmp_path / "runs"
    argv = ["train", "--dataset", "letter", "--model", "mlp", "--method", "fmix", "--epochs",
            "1", "--runs-root", str(runs), "--no-progress", "--device", "cpu"]
    for _ in range(2):
        code, _, err = run_cli(capsys, *argv)
        assert code == 2 and "FMix needs inputs with a spatial" in err, err
        assert "already exists" not in err
    assert not runs.exists() or not any(runs.rglob("*"))


def test_run_summary_prints_no_fgsm_nan_for_validation(capsys, tmp_path, monkeypatch):
    # Issue 23.14: every summary printed "val: ... fgsm acc nan" (validation has no attack).
    import mixupe.engine as engine

    final = {"val": {"acc": 0.5, "nll": 1.0, "ece": 0.1},
             "test": {"acc": 0.25, "nll": 2.0, "ece": 0.2, "fgsm_acc": 0.125}}
    monkeypatch.setattr(engine, "train", lambda cfg, **kw: engine.RunResult(
        tmp_path / "run", cfg, final, True, None))
    code, out, _ = run_cli(capsys, "train", "--runs-root", str(tmp_path), "--no-progress")
    assert code == 0 and "nan" not in out
    assert "val: acc 0.5000 nll 1.0000 ece 0.1000;" in out
    assert "test: acc 0.2500 nll 2.0000 ece 0.2000 fgsm acc 0.1250" in out


def test_a_first_epoch_above_chance_level_warns(caplog):
    # Issue 23.12: SGD at lr 0.1 left the solubility GIN at loss 10.9 (chance: log 3 = 1.10)
    # and a majority-class model, with no warning.
    import math

    from mixupe.engine.trainer import warn_above_chance

    cfg = TrainConfig(dataset="solubility", model="gin")
    with caplog.at_level("WARNING", logger="mixupe.engine"):
        assert warn_above_chance(10.9, 3, cfg)
    assert "above chance level log(3) = 1.099" in caplog.text and "--optimizer adamw" in caplog.text
    assert not warn_above_chance(math.log(3) - 1e-3, 3, cfg)
    assert warn_above_chance(math.log(10) + 1e-3, 10, cfg)
