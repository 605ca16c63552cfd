"""Suite executors: local worker processes and Ray train every run to the same bits as the
sequential runner (at equal torch threads), survive a killed worker and a killed driver, and
let two drivers share a runs root without training a run twice.

The reference is the sequential runner in this process with one torch thread; every other
executor is compared with it run by run: result.json and every metrics.jsonl record, without
the timing fields (``time_s``, ``eval_s``, ``wall_time_s``, ``final_eval_s``), which measure
the machine and differ from run to run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mixupe.bench.executors import RunLock, make_executor
from mixupe.bench.rundirs import find_runs
from mixupe.bench.runner import run_suite
from mixupe.bench.suites import parse_suite
from mixupe.engine import train
from mixupe.errors import ConfigError, NonFiniteLossError, RunError

try:
    import ray
except ImportError:  # pragma: no cover - depends on the environment
    ray = None
needs_ray = pytest.mark.skipif(ray is None, reason="Ray is not installed: pip install "
                               "'mixupe[ray]'")

TIMING = {"time_s", "eval_s", "wall_time_s", "final_eval_s"}
SUITE_TOML = """
name = "tiny"
seeds = [0, 1]
selection_seeds = [0]
[defaults]
epochs = 3
[[datasets]]
name = "digits"
[[arms]]
label = "ERM"
method = "erm"
[[arms]]
label = "Mixup"
method = "mixup"
grid = { alpha = [0.2, 1.0] }
"""
RUNS = 5  # ERM seeds 0, 1; Mixup's two points on selection seed 0; the chosen point on seed 1


def suite():
    import tomllib

    return parse_suite(tomllib.loads(SUITE_TOML))


def strip(value):
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


def snapshot(root: Path) -> dict[str, tuple[dict, list]]:
    out = {}
    for name in find_runs(root):
        run = root / name
        result = json.loads((run / "result.json").read_text())
        epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        out[name] = (strip(result), strip(epochs))
    return out


def starts(root: Path, name: str) -> list[str]:
    log = (root / name / "run.log").read_text()
    return [line for line in log.splitlines() if "mixupe.bench: start" in line]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, tuple[dict, list]]:
    root = tmp_path_factory.mktemp("sequential")
    before = torch.get_num_threads()
    outcome = run_suite(suite(), runs_root=root, executor=make_executor("sequential", threads=1))
    assert torch.get_num_threads() == before  # the driver's own setting is restored
    assert len(outcome.trained) == RUNS
    return snapshot(root)


# --------------------------------------------------------------- train_fn stand-ins (picklable)
def train_then_die_once(cfg, *, runs_root, resume, progress):
    """Train two epochs, then SIGKILL the worker process, the first time ERM seed 1 runs."""
    marker = Path(runs_root) / f"_killed-{cfg.config_hash()}"
    if cfg.method == "erm" and cfg.seed == 1 and not marker.exists():
        train(cfg, runs_root=runs_root, resume=resume, progress=False, max_epochs=2)
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return train(cfg, runs_root=runs_root, resume=resume, progress=progress)


def train_or_raise(cfg, *, runs_root, resume, progress):
    if cfg.method == "erm" and cfg.seed == 1:
        raise ValueError("a bug in a user's model")
    return train(cfg, runs_root=runs_root, resume=resume, progress=progress)


def diverge_or_count(cfg, *, runs_root, resume, progress):
    """ERM seed 0 diverges (as the engine records it); every call is counted in a file."""
    with open(Path(runs_root) / "_calls.txt", "a") as f:
        f.write(cfg.run_name() + "\n")
    if cfg.method == "erm" and cfg.seed == 0:
        run = Path(runs_root) / cfg.run_name()
        run.mkdir(parents=True, exist_ok=True)
        (run / "failed.json").write_text(json.dumps({"failed": True, "reason": "nan loss"}))
        raise NonFiniteLossError("the training loss became non-finite (nan)")
    return train(cfg, runs_root=runs_root, resume=resume, progress=progress)


# ---------------------------------------------------------------------------- processes
def test_two_worker_processes_train_the_same_bits_as_the_sequential_runner(tmp_path, reference):
    outcome = run_suite(suite(), runs_root=tmp_path,
                        executor=make_executor("processes", jobs=2, threads=1))
    assert sorted(outcome.trained) == sorted(reference)
    assert snapshot(tmp_path) == reference
    pids = set()
    for name in reference:  # each run trained once, in a worker, logging to its own file
        (line,) = starts(tmp_path, name)
        assert "with 1 torch threads" in line
        pids.add(int(line.split(" pid ")[1].split()[0]))
    assert os.getpid() not in pids and 1 <= len(pids) <= 2


def test_a_killed_worker_is_replaced_and_its_run_resumes_from_its_checkpoint(tmp_path, reference):
    outcome = run_suite(suite(), runs_root=tmp_path, executor=make_executor(
        "processes", jobs=2, threads=1, train_fn=train_then_die_once))
    # a run that finished just as the pool broke is found complete on retry (skipped)
    assert sorted(outcome.trained + outcome.skipped) == sorted(reference)
    assert not outcome.errors
    killed = next(n for n in reference if "/erm/" in n and "-seed1-" in n)
    lines = starts(tmp_path, killed)
    assert "(fresh)" in lines[0] and "(resume)" in lines[-1], lines
    assert snapshot(tmp_path) == reference


def test_a_worker_that_keeps_dying_is_reported_after_its_retries(tmp_path):
    with pytest.raises(RunError, match=r"ERM / point 0 / seed 1 .*died 1 times") as info:
        run_suite(suite(), runs_root=tmp_path, executor=make_executor(
            "processes", jobs=1, threads=1, max_retries=0, train_fn=train_then_die_once))
    assert len(info.value.outcome.trained) == RUNS - 1


def test_an_error_names_its_run_and_the_others_finish(tmp_path):
    with pytest.raises(RunError) as info:
        run_suite(suite(), runs_root=tmp_path,
                  executor=make_executor("processes", jobs=2, threads=1, train_fn=train_or_raise))
    message = str(info.value)
    assert "digits / ERM / point 0 / seed 1" in message and "a bug in a user's model" in message
    assert "run.log" in message
    assert len(info.value.outcome.trained) == RUNS - 1


def test_diverged_runs_are_recorded_and_never_retried(tmp_path):
    ex = make_executor("processes", jobs=2, threads=1, train_fn=diverge_or_count)
    first = run_suite(suite(), runs_root=tmp_path, executor=ex)
    assert len(first.failed) == 1 and "non-finite" in first.failed[0][1]
    calls = (tmp_path / "_calls.txt").read_text().splitlines()
    second = run_suite(suite(), runs_root=tmp_path, executor=make_executor(
        "processes", jobs=2, threads=1, train_fn=diverge_or_count))
    assert (tmp_path / "_calls.txt").read_text().splitlines() == calls  # nothing trained again
    assert len(second.skipped) == RUNS and len(second.failed) == 1


# ---------------------------------------------------------------------------- drivers
def cli(root: Path, suite_file: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "mixupe", "bench", str(suite_file),
                             "--runs-root", str(root), "--no-report", "--no-progress",
                             "--threads-per-run", "1", *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def test_a_killed_driver_restarts_where_it_stopped(tmp_path, reference):
    suite_file = tmp_path / "tiny.toml"
    suite_file.write_text(SUITE_TOML)
    root = tmp_path / "runs"
    proc = cli(root, suite_file, "--jobs", "2")
    deadline = time.monotonic() + 300
    while not list(root.rglob("metrics.jsonl")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, mid-run
    proc.wait()
    assert len(list(root.rglob("result.json"))) < RUNS
    again = cli(root, suite_file, "--jobs", "2")
    _out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert snapshot(root) == reference


def test_two_drivers_at_once_train_each_run_once(tmp_path, reference):
    suite_file = tmp_path / "tiny.toml"
    suite_file.write_text(SUITE_TOML)
    root = tmp_path / "runs"
    procs = [cli(root, suite_file), cli(root, suite_file, "--jobs", "2")]
    for proc in procs:
        _out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    assert snapshot(root) == reference
    for name in reference:
        assert len(starts(root, name)) == 1, (root / name / "run.log").read_text()


def test_a_held_lock_is_busy_and_released_when_its_holder_dies(tmp_path):
    path = tmp_path / "run" / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from mixupe.bench.executors import RunLock\n"
        f"lock = RunLock({str(path)!r}).__enter__(); print(lock.acquired, flush=True); "
        "time.sleep(600)")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "True"
    with RunLock(path) as lock:
        assert not lock.acquired and f"pid {holder.pid}" in lock.holder
    holder.kill()
    holder.wait()
    with RunLock(path) as lock:
        assert lock.acquired


# ---------------------------------------------------------------------------- options
@pytest.mark.parametrize(("kind", "options", "words"), [
    ("threads", {}, "unknown"),
    ("sequential", {"jobs": 2}, "--executor processes"),
    ("processes", {"address": "host:6379"}, "only to the ray executor"),
    ("processes", {"gpus_per_run": 0.25}, "only to the ray executor"),
    ("processes", {"jobs": 0}, "at least one worker"),
    ("processes", {"threads": 0}, "positive number of torch threads"),
    ("processes", {"max_retries": -1}, "0 or more"),
])
def test_impossible_executor_options_are_refused(kind, options, words):
    with pytest.raises(ConfigError, match=words):
        make_executor(kind, **options)


def test_cli_refuses_ray_options_for_local_processes(tmp_path):
    from mixupe.cli import main

    assert main(["bench", "smoke", "--runs-root", str(tmp_path), "--jobs", "2",
                 "--gpus-per-run", "0.25", "--no-report"]) == 2
    assert not list(tmp_path.rglob("config.json"))


# ---------------------------------------------------------------------------- ray
@pytest.fixture(scope="module")
def local_ray():
    tests = str(Path(__file__).parent)
    path = os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH", "")) if p)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}})
    yield
    ray.shutdown()


@needs_ray
@pytest.mark.parametrize("gpus", [0.0, pytest.param(0.25, id="gpu-fraction-refused-on-cpu")])
def test_ray_tasks_train_the_same_bits_as_the_sequential_runner(tmp_path, reference, local_ray,
                                                                 gpus):
    if gpus:  # Ray would queue GPU tasks forever on a cluster without GPUs: refused at start
        with pytest.raises(ConfigError, match="no GPU"):
            make_executor("ray", runs_root=tmp_path, gpus_per_run=gpus)
        return
    ex = make_executor("ray", runs_root=tmp_path, cpus_per_run=1)
    assert ex.capacity == 2
    outcome = run_suite(suite(), runs_root=tmp_path, executor=ex)
    assert sorted(outcome.trained) == sorted(reference)
    assert snapshot(tmp_path) == reference
    assert not list((tmp_path / "_executor").glob("probe-*"))  # the shared-fs probe is gone


@needs_ray
def test_ray_retries_a_killed_worker_and_the_run_resumes(tmp_path, reference, local_ray):
    outcome = run_suite(suite(), runs_root=tmp_path, executor=make_executor(
        "ray", runs_root=tmp_path, train_fn=train_then_die_once))
    assert sorted(outcome.trained + outcome.skipped) == sorted(reference)
    assert not outcome.errors
    killed = next(n for n in reference if "/erm/" in n and "-seed1-" in n)
    assert "(resume)" in starts(tmp_path, killed)[-1]
    assert snapshot(tmp_path) == reference
