"""Starting and resuming runs when things go wrong: a run that cannot start leaves nothing
behind, damaged files are recovered from or named precisely (never with "delete it" as the
first advice), a change of device is said, and SIGKILLs at random moments followed by
``--resume`` end bit-identical to an uninterrupted run."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import mixupe.data
import mixupe.models
from mixupe.engine import TrainConfig, train
from mixupe.engine import trainer as T
from mixupe.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    previous_checkpoint,
    save_checkpoint,
)
from mixupe.engine.distributed import DistContext
from mixupe.engine.rundir import RunDir
from mixupe.errors import ConfigError, CorruptDataError

SMALL = {"hidden": (16,)}
TIMINGS = ("time_s", "eval_s")


def _cfg(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = {"dataset": "digits", "model": "mlp", "epochs": 3, "lr": 0.05,
                            "batch_size": 128, "model_options": SMALL}
    return TrainConfig(**{**base, **kw})


def _records(run_dir: Path) -> list[dict[str, Any]]:
    out = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for r in out:  # wall-clock timings differ between runs
        for key in TIMINGS:
            r.pop(key, None)
    return out


def _result(run_dir: Path) -> dict[str, Any]:
    result = json.loads((run_dir / "result.json").read_text())
    for key in ("wall_time_s", "final_eval_s"):
        result.pop(key)
    return result


def _same_model(a: Path, b: Path) -> None:
    ma, mb = load_checkpoint(a / "checkpoint.pt")["model"], load_checkpoint(b / "checkpoint.pt")[
        "model"]
    assert ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)


# ---------------------------------------------------------------------- a failed start
@pytest.mark.parametrize(
    ("options", "error", "pattern"),
    [
        ({"dataset": "nope"}, ConfigError, r"unknown dataset 'nope'"),
        ({"dataset": "csv", "data_options": {"label": "y"}}, ConfigError,
         r"csv needs root= the CSV file"),
        pytest.param({"dataset": "solubility", "model": "mlp"}, ConfigError,
                     r"'mlp' takes tensor batches but the data is graphs; .* 'gin'",
                     marks=pytest.mark.needs("torch_geometric")),
        ({"dataset": "letter", "model": "gin"}, ConfigError,
         r"'gin' takes graph batches but the data is tabular; .* 'mlp'"),
    ],
    ids=["unknown-dataset", "csv-without-file", "mlp-on-graphs", "gin-on-tables"],
)
def test_a_run_that_cannot_start_leaves_no_directory(tmp_path, options, error, pattern):
    with pytest.raises(error, match=pattern):
        train(_cfg(**options), runs_root=tmp_path / "runs", progress=False)
    assert not (tmp_path / "runs").exists()


def test_models_refuse_data_of_another_domain():
    with pytest.raises(ConfigError, match=r"'small-cnn' takes tensor batches but the data is "
                                          r"graphs; use a model for graphs, e.g. 'gin'"):
        mixupe.models.build("small-cnn", input_shape=(3,), num_classes=2, domain="graphs")
    net = mixupe.models.build("mlp", input_shape=(4,), num_classes=2, domain="tabular")
    assert net(torch.zeros(2, 4)).shape == (2, 2)


def test_overwrite_that_cannot_start_keeps_the_old_run(tmp_path, monkeypatch):
    cfg = _cfg(epochs=1)
    first = train(cfg, runs_root=tmp_path, progress=False)
    before = sorted(p.name for p in first.run_dir.iterdir())

    def broken_load(*args, **kwargs):
        raise ConfigError("the data cannot be read today")

    monkeypatch.setattr(mixupe.data, "load", broken_load)
    with pytest.raises(ConfigError, match=r"cannot be read today"):
        train(cfg, runs_root=tmp_path, progress=False, overwrite=True)
    assert sorted(p.name for p in first.run_dir.iterdir()) == before
    assert (first.run_dir / "result.json").is_file()


# ---------------------------------------------------------------------- damaged files
def test_a_truncated_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    cfg = _cfg()
    straight = train(cfg, runs_root=tmp_path / "a", progress=False)
    part = train(cfg, runs_root=tmp_path / "b", progress=False, max_epochs=2)
    ckpt = part.run_dir / "checkpoint.pt"
    assert load_checkpoint(previous_checkpoint(ckpt))["epoch"] == 1
    ckpt.write_bytes(ckpt.read_bytes()[:1000])  # a copy cut short
    with caplog.at_level(logging.WARNING, logger="mixupe.engine.checkpoint"):
        resumed = train(cfg, runs_root=tmp_path / "b", progress=False, resume=True)
    assert "resuming from the previous checkpoint checkpoint.prev.pt (epoch 1)" in caplog.text
    assert _records(straight.run_dir) == _records(resumed.run_dir)
    assert _result(straight.run_dir) == _result(resumed.run_dir)
    _same_model(straight.run_dir, resumed.run_dir)
    assert not previous_checkpoint(ckpt).exists()  # a complete run needs no fall-back


def test_unreadable_checkpoints_are_named_without_advice_to_delete(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1})
    path.write_bytes(b"cut")
    with pytest.raises(CorruptDataError, match=r"cannot be read .*no previous checkpoint; "
                                               r"restore the run directory from a copy") as err:
        load_checkpoint(path)
    assert "delete" not in str(err.value)
    save_checkpoint(path, {"epoch": 1})
    save_checkpoint(path, {"epoch": 2})
    path.write_bytes(b"cut")
    previous_checkpoint(path).write_bytes(b"cut too")
    with pytest.raises(CorruptDataError, match=r"neither can the previous one") as err:
        load_checkpoint(path)
    assert "delete" not in str(err.value)


def test_checkpoint_format_and_config_are_checked_on_load(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1, "config_hash": "abc123"})
    assert load_checkpoint(path, config_hash="abc123")["format"] == CHECKPOINT_FORMAT
    with pytest.raises(ConfigError, match=r"config hash 'abc123', not 'def456'.*--overwrite"):
        load_checkpoint(path, config_hash="def456")
    state = torch.load(path, weights_only=False)
    torch.save({**state, "format": CHECKPOINT_FORMAT + 1, "mixupe_version": "9.9"}, path)
    with pytest.raises(ConfigError, match=rf"has format {CHECKPOINT_FORMAT + 1}, written by "
                                          rf"mixupe 9.9, but this mixupe reads format "
                                          rf"{CHECKPOINT_FORMAT}; resume it with the mixupe "
                                          r"version that wrote it") as err:
        load_checkpoint(path)
    assert "corrupt" not in str(err.value) and "delete" not in str(err.value)


def test_a_checkpoint_of_another_run_is_refused_on_resume(tmp_path):
    cfg, other = _cfg(), _cfg(seed=1)
    train(cfg, runs_root=tmp_path, progress=False, max_epochs=1)
    done = train(other, runs_root=tmp_path, progress=False, max_epochs=1)
    here = tmp_path / cfg.run_name() / "checkpoint.pt"
    here.write_bytes((done.run_dir / "checkpoint.pt").read_bytes())  # copied by mistake
    with pytest.raises(ConfigError, match=r"belongs to a run with config hash"):
        train(cfg, runs_root=tmp_path, progress=False, resume=True)


def test_a_corrupt_middle_line_of_the_metrics_stops_instead_of_dropping_epochs(tmp_path):
    cfg = _cfg()
    part = train(cfg, runs_root=tmp_path, progress=False, max_epochs=2)
    path = part.run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines()
    lines[0] = lines[0][: len(lines[0]) // 2]  # epoch 1 damaged, epoch 2 after it
    damaged = "\n".join(lines) + "\n"
    path.write_text(damaged)
    with pytest.raises(CorruptDataError, match=r"line 1 of .*metrics.jsonl is not valid JSON .* "
                                               r"1 line\(s\) follow it.*repair that line"):
        train(cfg, runs_root=tmp_path, progress=False, resume=True)
    assert path.read_text() == damaged  # nothing was dropped
    # A torn last line (killed while appending) is still ignored, and dropped on resume.
    path.write_text(path.read_text().splitlines()[1] + "\n" + '{"epoch": 3, "lo')
    resumed = train(cfg, runs_root=tmp_path, progress=False, resume=True)
    assert [r["epoch"] for r in _records(resumed.run_dir)] == [2, 3]


# ---------------------------------------------------------------------- device changes
@pytest.fixture
def cpu_checkpoint(tmp_path):
    cfg = _cfg(epochs=2)
    done = train(cfg, runs_root=tmp_path, progress=False, max_epochs=1)
    ckpt = load_checkpoint(done.run_dir / "checkpoint.pt")
    parts = T._build(cfg, DistContext(0, 1, 0, torch.device("cpu"), owns_group=False))
    return cfg, RunDir(tmp_path, cfg), ckpt, parts


def test_resuming_a_cpu_checkpoint_on_cuda_warns_and_seeds_the_cuda_generator(
        cpu_checkpoint, monkeypatch, caplog):
    cfg, run, ckpt, parts = cpu_checkpoint
    seeds: list[int] = []
    monkeypatch.setattr(torch.cuda, "manual_seed", seeds.append)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda *a: pytest.fail("no CUDA state"))
    cuda = DistContext(0, 1, 0, torch.device("cuda", 0), owns_group=False)
    with caplog.at_level(logging.WARNING, logger="mixupe.engine.trainer"):
        T._restore(ckpt, parts, cuda, run)
    assert "written on the CPU and resumes on cuda:0" in caplog.text
    assert seeds == [T.derive_seed(cfg.seed, "global", 0, "resume", 1)]


def test_resuming_a_cuda_checkpoint_on_the_cpu_warns(cpu_checkpoint, monkeypatch, caplog):
    _, run, ckpt, parts = cpu_checkpoint
    ckpt["rank_states"][0]["cuda_rng"] = torch.zeros(16, dtype=torch.uint8)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda *a: pytest.fail("set on a CPU run"))
    cpu = DistContext(0, 1, 0, torch.device("cpu"), owns_group=False)
    with caplog.at_level(logging.WARNING, logger="mixupe.engine.trainer"):
        T._restore(ckpt, parts, cpu, run)
    assert "written on CUDA and resumes on cpu" in caplog.text


# ---------------------------------------------------------------------- SIGKILL
def _cli(root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mixupe", "train", "--dataset", "digits", "--epochs", "10",
            "--batch-size", "64", "--lr", "0.05", "--model-options", "hidden=[16]",
            "--model-options", "dropout=0.2", "--method", "mixupe", "--runs-root", str(root),
            "--no-progress", "--device", "cpu", *extra]


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    # The uninterrupted reference, in this process (one thread, as the subprocesses).
    cfg = TrainConfig(dataset="digits", epochs=10, batch_size=64, lr=0.05, method="mixupe",
                      model_options={"hidden": (16,), "dropout": 0.2}, device="cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(cfg, runs_root=tmp_path / "straight", progress=False)
    finally:
        torch.set_num_threads(threads)
    name = cfg.run_name()
    killed_root = tmp_path / "killed"
    metrics = killed_root / name / "metrics.jsonl"
    rng = random.Random(20261130)
    kills = 0
    for _ in range(4):
        seen = _lines(metrics)
        proc = subprocess.Popen(_cli(killed_root, "--resume"), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Kill at a random moment after this process has finished at least one epoch (so the
        # run moves on): inside an epoch, while appending metrics or writing a checkpoint.
        deadline = time.monotonic() + 120
        while proc.poll() is None and _lines(metrics) <= seen and time.monotonic() < deadline:
            time.sleep(0.01)
        records = metrics.read_text().splitlines() if metrics.exists() else []
        epoch_s = json.loads(records[-1]).get("time_s", 0.1) if records else 0.1
        time.sleep(rng.uniform(0.0, 1.2 * epoch_s))  # somewhere in the next epoch
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 1, "every process finished before its kill: the test tested nothing"
    print(f"{kills} kills; epochs done before the final resume: {_lines(metrics)}")
    done = subprocess.run(_cli(killed_root, "--resume"), env=env, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr
    straight, killed = tmp_path / "straight" / name, killed_root / name
    assert _records(killed) == _records(straight)
    assert [r["epoch"] for r in _records(killed)] == list(range(1, 11))
    assert _result(killed) == _result(straight)
    _same_model(killed, straight)
