"""benchmarks/gpu_check.sh is checked without a GPU: its syntax (``bash -n``), and every command
its dry run prints is one the tools here accept (test files exist, ``mixupe train`` options
resolve to a config, the step-time options parse). It is never run for real here."""

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


def test_every_command_of_the_dry_run_is_accepted(capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path) -> None:
    from mixupe.cli import main

    commands = dry_run_commands()
    kinds = []
    for argv in commands:
        assert argv[0].endswith("python")
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
        elif argv[1] == "benchmarks/step_time.py":
            spec = importlib.util.spec_from_file_location("step_time", ROOT / argv[1])
            module = importlib.util.module_from_spec(spec)
            sys.modules["step_time"] = module  # its dataclasses look their module up
            try:
                spec.loader.exec_module(module)
                args = module.parse_args(argv[2:])
            finally:
                del sys.modules["step_time"]
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
    assert kinds == ["pytest", "train", "train", "step_time", "loss_path"]


def test_without_a_gpu_it_stops_with_status_2() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the script would run for real")
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", "PY": sys.executable})
    assert done.returncode == 2
    assert "no CUDA device is visible" in done.stderr
