"""benchmarks/gpu_check.sh is checked without a GPU: its syntax (``bash -n``), and every command
its dry run prints is one the tools here accept (test files exist, ``mixupe train`` options
resolve to a config, the step-time and resume-check options parse), and its refusals without
a CUDA build of torch or without a GPU. It is never run for real here."""

from __future__ import annotations

import importlib.util
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def test_syntax() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def dry_run_commands() -> list[list[str]]:
    done = subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True,
                          check=True, cwd=ROOT)
    return [shlex.split(line[2:]) for line in done.stdout.splitlines() if line.startswith("+ ")]


def _load(name: str) -> object:
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


def test_every_command_of_the_dry_run_is_accepted(capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path) -> None:
    from mixupe.cli import main

    commands = dry_run_commands()
    kinds = []
    for argv in commands:
        assert Path(argv[0]).name.startswith("python")
        if argv[1:3] == ["-m", "pytest"]:
            files = [a for a in argv[3:] if a.startswith("tests/")]
            assert files and all((ROOT / f).is_file() for f in files)
            kinds.append("pytest")
        elif argv[1:4] == ["-m", "mixupe", "train"]:
            args = argv[4:]
            root = args.index("--runs-root")
            args[root + 1] = str(tmp_path)
            assert main(["train", *args, "--dry-run"]) == 0  # options resolve to a config
            assert '"device": "cuda"' in capsys.readouterr().out
            kinds.append("train")
        elif argv[1] == "benchmarks/resume_check.py":
            args = _load("resume_check").parse_args(argv[2:])
            assert args.cfg.device == "cuda" and args.cfg.epochs >= 2
            if args.expect_scaler:
                assert args.cfg.amp and args.cfg.amp_dtype == "fp16"
                kinds.append("fp16 resume")
            else:
                assert args.expect_identical and args.cfg.deterministic
                kinds.append("deterministic resume")
        elif argv[1] == "benchmarks/step_time.py":
            args = _load("step_time").parse_args(argv[2:])
            assert args.device == "cuda"
            kinds.append("step_time")
        elif argv[1] == "benchmarks/loss_path.py":
            spec = importlib.util.spec_from_file_location("loss_path", ROOT / argv[1])
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            assert module.parse_args(argv[2:]).device == "cuda"
            kinds.append("loss_path")
        else:
            raise AssertionError(f"unexpected command in gpu_check.sh: {argv}")
    assert kinds == ["pytest", "train", "train", "fp16 resume", "deterministic resume",
                     "step_time", "loss_path"]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          cwd=ROOT, env={"PATH": "/usr/bin:/bin", **(env or {})})


def test_its_first_line_says_what_it_needs_and_the_dry_run_lists_the_stages() -> None:
    done = _run("--dry-run", "--python", sys.executable)
    assert done.returncode == 0
    first = done.stdout.splitlines()[0]
    assert "needs a CUDA GPU" in first and "CUDA build of torch" in first
    stages = [line for line in done.stdout.splitlines() if line.startswith("=== ")]
    assert len(stages) == 7 and any("fp16" in s for s in stages)
    assert any("deterministic" in s for s in stages)


def test_without_a_cuda_build_it_stops_with_status_2_and_the_install_command() -> None:
    import torch

    if torch.version.cuda:
        pytest.skip("this torch is a CUDA build")
    done = _run("--python", sys.executable)
    assert done.returncode == 2
    assert f"{sys.executable}: torch {torch.__version__}, a CPU build" in done.stderr
    assert "bash benchmarks/gpu_check.sh --install" in done.stderr
    assert 'pip install "torch==' in done.stderr and "--index-url" in done.stderr
    assert _run("--python", "/nonexistent/python").returncode == 2


def test_with_a_cuda_build_but_no_gpu_it_stops_with_status_2(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the script would run for real")
    # a stand-in for a CUDA build: torch.version.cuda is set at start-up
    (tmp_path / "sitecustomize.py").write_text("import torch\ntorch.version.cuda = '12.8'\n")
    done = _run(env={"PY": sys.executable, "PYTHONPATH": str(tmp_path)})
    assert done.returncode == 2
    assert "no CUDA device is visible" in done.stderr and "CUDA build 12.8" in done.stderr
