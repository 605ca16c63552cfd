"""One config trained twice through the engine: straight, and one epoch, then a resume.

For ``benchmarks/gpu_check.sh`` (it needs a GPU to say anything new, but runs anywhere):

- ``--expect-scaler``: the checkpoints after the first epoch and at the end of the resumed run
  hold a gradient scaler's state (fp16 autocast) with a finite, positive scale;
- ``--expect-identical``: the resumed run's final model is bit-identical to the straight
  run's (SHA-256 of every tensor); on CUDA that needs ``deterministic=true``.

Both runs must complete with finite weights. The config is given as ``KEY=VALUE`` pairs of
:class:`mixupe.engine.TrainConfig` (values parsed as JSON where they parse)::

    python benchmarks/resume_check.py --runs-root /tmp/rc --expect-scaler -- \\
        dataset=digits model=mlp method=mixupe epochs=2 device=cuda amp=true amp_dtype=fp16

Prints the digests, the scaler states and one verdict line; exits 0 when every expectation
held, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch

from mixupe.engine import TrainConfig, train
from mixupe.engine.checkpoint import load_checkpoint


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def config_from(pairs: list[str]) -> TrainConfig:
    """The TrainConfig of ``KEY=VALUE`` pairs (``epochs`` at least 2: one before the resume)."""
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"resume_check: {pair!r} is not KEY=VALUE; write e.g. epochs=2")
        values[key] = _value(value)
    cfg = TrainConfig.from_dict(values)
    if cfg.epochs < 2:
        raise SystemExit(f"resume_check: epochs={cfg.epochs}; pass epochs=2 or more")
    return cfg


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs-root", type=Path, required=True)
    p.add_argument("--expect-scaler", action="store_true")
    p.add_argument("--expect-identical", action="store_true")
    p.add_argument("config", nargs="+", metavar="KEY=VALUE")
    args = p.parse_args(argv)
    args.cfg = config_from(args.config)
    return args


def _scaler_problem(ckpt: dict[str, Any]) -> str | None:
    state = ckpt.get("scaler")
    if not isinstance(state, dict):
        return f"the checkpoint holds no gradient-scaler state (scaler={state!r})"
    scale = float(state.get("scale", math.nan))
    if not math.isfinite(scale) or scale <= 0:
        return f"the checkpointed scale {scale} is not a finite positive number"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = args.cfg
    straight = train(cfg, runs_root=args.runs_root / "straight", overwrite=True, progress=False)
    part = train(cfg, runs_root=args.runs_root / "resumed", overwrite=True, progress=False,
                 max_epochs=1)
    first = load_checkpoint(part.run_dir / "checkpoint.pt")
    resumed = train(cfg, runs_root=args.runs_root / "resumed", resume=True, progress=False)
    problems = [f"{name} run is incomplete" for name, r in
                (("the straight", straight), ("the resumed", resumed)) if not r.complete]
    ends = {name: load_checkpoint(r.run_dir / "checkpoint.pt")
            for name, r in (("straight", straight), ("resumed", resumed))}
    for name, ckpt in ends.items():
        if not all(torch.isfinite(t).all() for t in ckpt["model"].values()
                   if t.is_floating_point()):
            problems.append(f"the {name} run has non-finite weights")
    pairs = list(zip(ends["straight"]["model"].values(), ends["resumed"]["model"].values(),
                     strict=True))
    identical = all(torch.equal(a, b) for a, b in pairs)
    gap = max(float((a.double() - b.double()).abs().max()) for a, b in pairs if a.numel())
    print(f"straight {straight.run_dir}, resumed {resumed.run_dir}: models "
          f"{'bit-identical' if identical else f'differ, max |difference| {gap:.3g}'}")
    print(f"scaler after epoch 1: {first.get('scaler')}; at the end: "
          f"{ends['resumed'].get('scaler')}")
    if args.expect_scaler:
        problems += [p for p in (_scaler_problem(first), _scaler_problem(ends["resumed"])) if p]
    if args.expect_identical and not identical:
        problems.append("the resumed model differs from the straight one")
    if problems:
        print("resume_check: FAILED: " + "; ".join(problems))
        return 1
    print("resume_check: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
