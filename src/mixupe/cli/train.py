"""``mixupe train``: one run, from a config file and the ``--FIELD`` options."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from mixupe.cli.common import EXIT_OK, CliError, out, progress_wanted, world_size
from mixupe.cli.fields import OPTION_FIELDS, _add_field_options
from mixupe.cli.options import add_flags, add_runs_root

# A method's own defaults where they differ from TrainConfig's (which are MixupE's): those
# of the library's class for that method (RegMixup: eta 1 and Mixup(alpha=10), as the paper).
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {"regmixup": {"eta": 1.0, "alpha": 10.0}}
# Options that apply by another option than the method: the option that makes them apply.
_APPLIES_WITH = {"momentum": "--optimizer sgd", "milestones": "--schedule step",
                 "gamma": "--schedule step", "threshold": "--method mixupe --version 1 or 3",
                 "fast_sign": "--method mixupe --version 3 or 4"}
_SUMMARY_METRICS = (("acc", "acc"), ("nll", "nll"), ("ece", "ece"), ("fgsm_acc", "fgsm acc"))


def add_parser(sub: Any) -> None:
    """The ``train`` subcommand."""
    train = sub.add_parser(
        "train", help="train one run", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train one run. Options come from --config, then from the --FIELD options "
                    "below, which override the file. The run goes to RUNS_ROOT/<run name>.")
    train.add_argument("--config", type=Path, metavar="FILE",
                       help="TOML or JSON file of TrainConfig fields (a run's config.json works)")
    add_runs_root(train, "directory that holds run directories (default: ./runs)")
    mode = train.add_mutually_exclusive_group()
    add_flags(mode, {"--resume": "continue an existing run directory from its checkpoint",
                     "--overwrite": "delete an existing run directory and start again"})
    add_flags(train, {"--no-progress": "no progress bar (the default on a non-terminal)",
                      "--dry-run": "print the resolved config and run directory, do not train"})
    _add_field_options(train.add_argument_group("training options (TrainConfig fields)"))


def _read_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CliError(f"--config {str(path)!r} does not exist; pass an existing TOML or JSON file")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"--config {str(path)!r} does not parse ({exc}); fix its syntax") from exc
    if isinstance(data.get("config"), dict):  # a run's config.json
        data = data["config"]
    return dict(data)


def _applies(cfg: Any, name: str) -> bool:
    """Whether field ``name`` can affect ``cfg``'s run (normalisation keeps its value; alpha
    does nothing for a mixer that draws no Beta lambda, such as ResizeMix)."""
    from mixupe.engine.naming import NO_ALPHA_MIXERS

    if name == "alpha" and cfg.mixer_name() in NO_ALPHA_MIXERS:
        return False
    return getattr(cfg.normalized(), name) == getattr(cfg, name)


def _refuse_inapplicable(cfg: Any, given: set[str]) -> None:
    """CliError for an option given on the command line that cannot affect this run (it
    would be dropped silently and the run named as without it), naming where it applies."""
    from mixupe.engine.config import METHODS
    from mixupe.errors import ConfigError

    for name in sorted(given):
        if name in ("method", "optimizer", "schedule", "version") or _applies(cfg, name):
            continue
        methods = []
        for method in METHODS:
            try:
                other = dataclasses.replace(cfg, method=method)
            except ConfigError:
                continue
            if _applies(other, name):
                methods.append(method)
        flag = f"--{name.replace('_', '-')}"
        raise CliError(
            f"{flag} does not apply to this run ({_run_kind(cfg)}) and would be ignored; it "
            f"applies with {_APPLIES_WITH.get(name) or _where(cfg, methods)}: drop {flag} or "
            "change the run"
        )


def _run_kind(cfg: Any) -> str:
    mixer = cfg.mixer_name()
    return f"--method {cfg.method}" + ("" if mixer in (None, cfg.method) else f" --mixing {mixer}")


def _where(cfg: Any, methods: list[str]) -> str:
    """The methods (and, under a wrapping method, the --mixing values) an option applies to."""
    from mixupe.engine.config import METHODS, MIXERS

    if not methods:
        return "other settings of the mixer"
    if len(methods) == len(METHODS) - 1:
        return f"every method but {cfg.method}"
    text = f"--method {' / '.join(methods)}"
    mixers = [m for m in methods if m in MIXERS]
    if cfg.method in ("mixupe", "regmixup", "mixup-ce") and mixers:
        text += f", or --method {cfg.method} with --mixing {' / '.join(mixers)}"
    return text


def _resolve_config(args: argparse.Namespace) -> Any:
    """The TrainConfig of ``--config`` overridden by the flags given, the method's defaults
    filling what neither sets; refused when a flag cannot affect the run."""
    from mixupe.engine import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values: dict[str, Any] = _read_config_file(args.config) if args.config else {}
    for name in fields:
        if name in vars(args):
            value = getattr(args, name)
            if name in OPTION_FIELDS:
                value = {**dict(values.get(name) or {}), **dict(value)}
            values[name] = value
    given = {name for name in fields if name in vars(args)}  # set by a flag, not by --config
    for name, value in METHOD_DEFAULTS.get(values.get("method", "erm"), {}).items():
        values.setdefault(name, value)
    cfg = TrainConfig.from_dict(values)
    _refuse_inapplicable(cfg, given)
    return cfg


def _print_summary(result: Any) -> None:
    final = result.final or {}
    parts = []
    for split in ("val", "test"):
        m = final.get(split) or {}
        shown = [f"{label} {m[key]:.4f}" for key, label in _SUMMARY_METRICS
                 if isinstance(m.get(key), (int, float))]  # validation has no FGSM
        if shown:
            parts.append(f"{split}: " + " ".join(shown))
    out(f"run: {result.run_dir}")
    out("; ".join(parts) if parts else "no metrics")


def run(args: argparse.Namespace) -> int:
    """Train the run (under torchrun, only rank 0 prints)."""
    from mixupe.engine import train

    cfg = _resolve_config(args)
    main_rank = world_size() <= 1 or int(os.environ.get("RANK", "0")) == 0
    if args.dry_run:
        if main_rank:
            out(json.dumps(cfg.to_dict(), indent=1))
            out(f"run directory: {Path(args.runs_root) / cfg.run_name()}")
        return EXIT_OK
    result = train(cfg, runs_root=args.runs_root, resume=args.resume, overwrite=args.overwrite,
                   progress=main_rank and progress_wanted(args.no_progress))
    if main_rank:
        _print_summary(result)
    return EXIT_OK
