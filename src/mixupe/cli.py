"""The ``mixupe`` command line: ``train``, ``bench``, ``report`` and ``data``.

Exit codes: 0 success, 2 usage or configuration error (a message on stderr, no traceback),
3 a training run diverged (non-finite loss), 1 anything else.

Example:
    >>> main(["data", "list"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
import sys
import traceback
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from mixupe.errors import (
    ConfigError,
    DataUnavailableError,
    InputError,
    MixupeError,
    NonFiniteLossError,
    RunError,
)

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_OTHER, EXIT_USAGE, EXIT_DIVERGED = 0, 1, 2, 3

# One help line per TrainConfig field (kept here because they are the command line's words).
FIELD_HELP: dict[str, str] = {
    "dataset": "dataset name (see `mixupe data list`)",
    "model": "model name: mlp, small-cnn, preact-resnet18, mfcc-cnn, gin",
    "method": "training objective: erm, mixupe, regmixup, or a mixer alone: mixup, cutmix, "
              "manifold, mixup-cutmix, fmix, resizemix, saliencymix, puzzlemix, comixup, "
              "alignmix",
    "alpha": "Beta(alpha, alpha) parameter of the mixing coefficient lambda",
    "per_sample": "draw one lambda per sample instead of one per batch",
    "mixing": "the mixer of MixupE and RegMixup: auto (input mixup for tensors, manifold at "
              "the model's mix layers for graphs) or a mixer name (see method)",
    "mix_layers": "comma-separated submodule names for manifold mixing ('none' = the model's "
                  "own mix_layers)",
    "label_smoothing": "label smoothing of the targets, in [0, 1)",
    "eta": "MixupE: weight of the directional-derivative term; RegMixup: weight of the "
           "mixing loss (regmixup's default: 1.0, and alpha 10.0)",
    "version": "MixupE version 1-4 (3 is the authors' published configuration)",
    "threshold": "MixupE versions 1 and 3: select samples whose score is below this "
                 "('none' = select all)",
    "fast_sign": "MixupE versions 3 and 4: sign of the fast term, -1 as released or +1",
    "rescale": "MixupE: rescale the combined loss to the Mixup loss's magnitude",
    "clean_pass": "MixupE clean forward pass: separate (as released) or fused with the mixed batch",
    "clean_fraction": "MixupE: fraction of the batch the clean pass runs on (a random subset; the "
                      "term is its mean), in (0, 1]",
    "cutmix_axes": "CutMix: comma-separated batch axes the box spans, e.g. 1 for (B, L, D) "
                   "sequences or 3 for time in (B, 1, F, T) ('none' = by the input's rank)",
    "epochs": "number of training epochs",
    "batch_size": "mini-batch size",
    "optimizer": "sgd (Nesterov momentum) or adamw",
    "lr": "peak learning rate",
    "momentum": "SGD momentum",
    "weight_decay": "weight decay",
    "schedule": "learning-rate schedule after warm-up: cosine, step or constant",
    "warmup_epochs": "epochs of linear learning-rate warm-up",
    "milestones": "comma-separated epochs at which the step schedule multiplies lr by gamma",
    "gamma": "factor of the step schedule",
    "model_options": "KEY=VALUE option for the model builder (repeatable; VALUE parsed as JSON "
                     "when possible), e.g. width=256",
    "data_options": "KEY=VALUE option for the data loader (repeatable), e.g. subset=5000",
    "fgsm_eps": ("FGSM attack size in standardised input units for the robustness metric "
                 "(graph node-feature columns that are all 0/1, e.g. one-hot, are not attacked)"),
    "ece_bins": "number of equal-width bins of the expected calibration error",
    "val_every": "validate every N epochs (and at the last); 1: every epoch",
    "lambda_sampler": "how Beta lambdas are drawn: transform (public uniforms) or dirichlet "
                      "(mixupe 0.1's private-API draws, to reproduce its runs)",
    "full_eval": "when test, FGSM and reliability are evaluated: end (final and best-validation "
                 "epoch; validation every epoch) or each-epoch",
    "seed": "random seed (data order, initialisation, mixing; the split too unless data-seed)",
    "data_seed": "seed of the train/validation split and training subset ('none' = the run "
                 "seed, so every seed has its own split)",
    "mixer_options": "KEY=VALUE option for the mixer's constructor (repeatable), e.g. "
                     "grid_sizes=[2,4] for puzzlemix",
    "mix_prob": "probability of mixing a batch at all (timm's prob)",
    "off_epoch": "first epoch (from 1) without mixing ('none' = mix throughout)",
    "label_alpha": "Mixup: mix labels with their own Beta(label_alpha) lambda ('none' = one "
                   "lambda)",
    "cutmix_alpha": "mixup-cutmix: CutMix's alpha ('none' = alpha)",
    "cutmix_minmax": "CutMix box sides drawn from this range of the side length, e.g. 0.2,0.8",
    "switch_prob": "mixup-cutmix: probability of CutMix for a batch",
    "sam_rho": "wrap the optimiser in SAM with this radius ('none' = no SAM; Mixup + SAM is "
               "the G-Mix baseline)",
    "device": "auto, cpu, cuda or cuda:N",
    "amp": "automatic mixed precision (CUDA only)",
    "amp_dtype": "the autocast dtype of --amp: bf16, fp16 (with a gradient scaler) or auto "
                 "(bf16 where the GPU supports it)",
    "deterministic": "deterministic kernels only (torch.use_deterministic_algorithms, cuDNN, "
                     "cuBLAS workspace): CUDA runs repeat and resume bit for bit",
}


OPTION_FIELDS = ("model_options", "data_options", "mixer_options")


class CliError(MixupeError):
    """A command-line usage problem (exit code 2)."""


# ---------------------------------------------------------------------------- value parsing
def _parse_value(text: str) -> Any:
    """JSON when it parses (numbers, true/false, lists), the plain string otherwise."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _builtin_suites() -> list[str]:
    from mixupe.bench.suites import builtin_suites  # imported late: the CLI starts fast

    return builtin_suites()


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE; write e.g. subset=5000")
    return key.strip(), _parse_value(value.strip())


def _key_values(text: str) -> tuple[str, list[Any]]:
    key, sep, values = text.partition("=")
    if not sep or not key or not values.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=V1[,V2...]; write e.g. alpha=0.2")
    return key.strip(), [_parse_value(v.strip()) for v in values.split(",") if v.strip()]


def _none_or(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` for an optional field: the word ``none`` gives None."""

    def parse_optional(text: str) -> Any:
        return None if text.lower() == "none" else parse(text)

    parse_optional.__name__ = getattr(parse, "__name__", "value")  # argparse's error message
    return parse_optional


def _tuple_of(element: type, length: int | None) -> Callable[[str], tuple[Any, ...]]:
    """A parser of comma-separated values of ``element``: ``length`` of them, or any number."""
    shown = ",".join([element.__name__.upper()] * (length or 2)) + ("" if length else "...")
    example = ",".join(({int: ["2", "4"], float: ["0.2", "0.8"]}.get(element, ["a", "b"]) * 4)
                       [: length or 2])

    def parse_tuple(text: str) -> tuple[Any, ...]:
        try:
            values = tuple(element(s.strip()) for s in text.split(",") if s.strip())
        except ValueError:
            values = None
        if values is None or (length is not None and len(values) != length):
            raise argparse.ArgumentTypeError(f"{text!r} is not {shown}; write e.g. {example}")
        return values

    parse_tuple.__name__ = f"{element.__name__} tuple"
    return parse_tuple


def _field_kind(hint: Any) -> tuple[Any, bool]:
    """The type of a field and whether it may be None: ``float | None`` -> (float, True)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0], True
    return hint, False


def _add_field_options(parser: argparse.ArgumentParser) -> None:
    """One ``--field`` option per TrainConfig field; unset options do not override anything.

    The option's parser follows the field's type (``typing.get_type_hints``), so a new field
    of a known type needs no code here, and one of an unknown type fails loudly.
    """
    from mixupe.engine.config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        names = [f"--{f.name.replace('_', '-')}"]
        if "_" in f.name:
            names.append(f"--{f.name}")
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f"{FIELD_HELP.get(f.name, 'TrainConfig.' + f.name)} (default: {default!r})"
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        kind, optional = _field_kind(hints[f.name])
        element = typing.get_args(kind)[0] if typing.get_origin(kind) is tuple else None
        none = "|none" if optional else ""
        if kind is bool and not optional:
            parser.add_argument(*names, action=argparse.BooleanOptionalAction, **kw)
            continue
        if typing.get_origin(element) is tuple and not optional:  # (key, value) pairs
            parser.add_argument(*names, action="append", type=_key_value, metavar="KEY=VALUE",
                                **kw)
            continue
        parse, metavar = {
            int: (int, "INT"), float: (float, "FLOAT"), str: (str, f.name.upper()),
        }.get(kind, (None, ""))
        if element in (str, int, float):  # tuple[X, ...] or a fixed tuple[X, X]
            args = typing.get_args(kind)
            length = None if args[-1] is Ellipsis else len(args)
            if all(a is element for a in args if a is not Ellipsis):
                parse = _tuple_of(element, length)
                word = "NAME" if element is str else element.__name__.upper()
                metavar = ",".join([word] * (length or 1)) + ("" if length else "[,...]")
        if parse is None:
            raise TypeError(f"no command-line parser for TrainConfig.{f.name} of type "
                            f"{hints[f.name]}; add one to mixupe.cli._add_field_options")
        parser.add_argument(*names, type=_none_or(parse) if optional else parse,
                            metavar=metavar + none, **kw)


# ---------------------------------------------------------------------------- parser
class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows an option's default, unless it is None/False or the help text already names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False) or "default" in text:
            return text
        return super()._get_help_string(action) or text


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``mixupe`` with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="mixupe",
        description="Mixup-family training (ERM, Mixup, CutMix, Manifold Mixup, MixupE) and an "
                    "honest benchmark harness.",
        epilog="Examples:\n  mixupe bench quick          # the quick suite, table and plots\n"
               "  mixupe report               # report on ./runs\n"
               "  mixupe train --dataset digits --method mixupe --eta 0.1 --epochs 5\n"
               "  mixupe data list",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log every step of the runner (and debug messages)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = sub.add_parser(
        "train", help="train one run", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train one run. Options come from --config, then from the --FIELD options "
                    "below, which override the file. The run goes to RUNS_ROOT/<run name>.")
    train.add_argument("--config", type=Path, metavar="FILE",
                       help="TOML or JSON file of TrainConfig fields (a run's config.json works)")
    train.add_argument("--runs-root", type=Path, default=Path("runs"),
                       help="directory that holds run directories (default: ./runs)")
    mode = train.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="continue an existing run directory from its checkpoint")
    mode.add_argument("--overwrite", action="store_true",
                      help="delete an existing run directory and start again")
    train.add_argument("--no-progress", action="store_true",
                       help="no progress bar (the default on a non-terminal)")
    train.add_argument("--dry-run", action="store_true",
                       help="print the resolved config and run directory, do not train")
    _add_field_options(train.add_argument_group("training options (TrainConfig fields)"))

    bench = sub.add_parser(
        "bench", help="run a benchmark suite (resumable), then print its table and write plots",
        formatter_class=_Formatter,
        description="Run every missing run of a suite (complete runs are skipped, partial runs "
                    "resumed, diverged runs reported and not retried), then print the suite's "
                    "table and write report.md and plots. Interrupt and rerun to continue.")
    bench.add_argument("suite", metavar="SUITE",
                       help=f"built-in suite ({', '.join(_builtin_suites())}) or a suite TOML file")
    bench.add_argument("--runs-root", type=Path, default=Path("runs"),
                       help="directory that holds run directories")
    bench.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                       help="replace the suite's seeds")
    bench.add_argument("--set", dest="overrides", action="append", type=_key_value, default=[],
                       metavar="FIELD=VALUE",
                       help="override a TrainConfig field for every run (repeatable), e.g. "
                            "--set epochs=2")
    bench.add_argument("--restrict", action="append", type=_key_values, default=[],
                       metavar="KEY=V1[,V2]",
                       help="keep only these values of a grid key (repeatable): an ablation "
                            "reported as its own suite NAME@KEY=V that reuses the runs, e.g. "
                            "--restrict alpha=0.2 compares every arm at the same alpha")
    bench.add_argument("--datasets", nargs="+", metavar="LABEL",
                       help="run only these datasets of the suite (the report covers all)")
    bench.add_argument("--arms", nargs="+", metavar="LABEL",
                       help="run only these arms of the suite (the report covers all)")
    bench.add_argument("--dry-run", action="store_true",
                       help="validate the suite and list its runs with their status; train nothing")
    bench.add_argument("--out", type=Path,
                       help="report directory (default: RUNS_ROOT/report)")
    bench.add_argument("--no-report", action="store_true", help="skip the table and plots")
    bench.add_argument("--no-progress", action="store_true", help="no progress bars")
    where = bench.add_argument_group(
        "where runs train", "the runner decides what runs next; the executor where (see "
        "docs/SCALE-OUT.md). Every run holds a lock in its directory and logs to its run.log, "
        "so several drivers may share a runs root")
    where.add_argument("--executor", choices=["sequential", "processes", "ray"],
                       help="sequential: one run at a time here (default); processes: --jobs "
                            "worker processes here; ray: Ray tasks on a local instance or the "
                            "cluster at --address / RAY_ADDRESS (needs mixupe[ray])")
    where.add_argument("--jobs", type=int, metavar="N",
                       help="runs in flight at once (processes: worker processes, default 1; "
                            "ray: default what the cluster fits); --jobs N > 1 alone means "
                            "--executor processes")
    where.add_argument("--threads-per-run", type=int, metavar="T",
                       help="torch threads of each run (sequential: default torch's; "
                            "processes: default CPUs // jobs)")
    where.add_argument("--address", metavar="HOST:PORT",
                       help="ray: the cluster to join (default RAY_ADDRESS, else a new local "
                            "instance)")
    where.add_argument("--cpus-per-run", type=float, default=1.0, metavar="C",
                       help="ray: CPUs each run asks for (also its torch threads)")
    where.add_argument("--gpus-per-run", type=float, default=0.0, metavar="G",
                       help="ray: GPUs each run asks for; a fraction shares a GPU (e.g. 0.25: "
                            "four runs per GPU)")
    where.add_argument("--max-retries", type=int, default=3, metavar="R",
                       help="processes and ray: times a run whose worker died is retried (it "
                            "resumes from its checkpoint; diverged runs are never retried)")

    report = sub.add_parser(
        "report", help="write the Markdown report and plots for a runs directory",
        formatter_class=_Formatter,
        description="Read run directories (never retrains) and write report.md with one table "
                    "per suite (mean ± 95 % CI, chosen hyper-parameters, paired differences) "
                    "and PNG plots; the Markdown is also printed.")
    report.add_argument("runs_dir", nargs="?", type=Path, default=Path("runs"), metavar="RUNS_DIR",
                        help="directory that holds run directories")
    report.add_argument("--suite", metavar="NAME", help="report only this suite")
    report.add_argument("--out", type=Path, help="output directory (default: RUNS_DIR/report)")
    report.add_argument("--no-plots", action="store_true", help="write report.md only")
    report.add_argument("--document", type=Path, metavar="FILE",
                        help="also write one Markdown document: --preamble's text, then the "
                             "report, image links relative to FILE (e.g. docs/RESULTS.md); "
                             "every 'mean ± half' the preamble quotes must be in the report")
    report.add_argument("--preamble", type=Path, metavar="FILE",
                        help="hand-written Markdown (title, set-up, conclusion) that opens "
                             "--document")

    pack = sub.add_parser(
        "pack", help="store a suite's finished runs compactly (one file per dataset)",
        formatter_class=_Formatter,
        description="Write the finished runs of a suite into OUT/_packs/SUITE--DATASET.json.gz "
                    "(config, result and per-epoch records, gzip) and its manifest into "
                    "OUT/_suites/: OUT is then a runs root that `mixupe report` reads and that "
                    "`mixupe bench` treats as done, without the run directories. A pack is "
                    "never replaced by one holding fewer runs.")
    pack.add_argument("suite", metavar="SUITE", help="suite name (as in RUNS_ROOT/_suites/)")
    pack.add_argument("--runs-root", type=Path, default=Path("runs"),
                      help="directory that holds the suite's run directories")
    pack.add_argument("--out", type=Path, required=True,
                      help="runs root to write the packs and manifest into, e.g. results/study")

    data = sub.add_parser("data", help="list, describe or prepare datasets",
                          description="Datasets shipped in packages or under a root folder.")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    data_sub.add_parser("list", help="list the dataset names",
                        description="List every dataset name with its domain.")
    for action, text in (("describe", "print a dataset's domain, classes, size, source and "
                                      "loader options (--load: also its split sizes)"),
                         ("prepare", "build a dataset's cache (superpixels) and load it once, "
                                     "so later runs start at once and missing files show now")):
        p = data_sub.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".",
                                formatter_class=_Formatter)
        p.add_argument("name", metavar="NAME", help="dataset name (see `mixupe data list`)")
        p.add_argument("--root", type=Path, help="folder with the data files (default: the "
                                                 "packaged copy)")
        p.add_argument("--seed", type=int, help="seed of the train/val/test split (default: 0)")
        p.add_argument("--option", dest="options", action="append", type=_key_value, default=[],
                       metavar="KEY=VALUE", help="loader option (repeatable), e.g. subset=5000")
        if action == "describe":
            p.add_argument("--load", action="store_true",
                           help="load the data and print the split sizes")
    return parser


# ---------------------------------------------------------------------------- commands
def _out(text: str) -> None:
    sys.stdout.write(text + ("" if text.endswith("\n") else "\n"))
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(text + ("" if text.endswith("\n") else "\n"))
    sys.stderr.flush()


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


# A method's own defaults where they differ from TrainConfig's (which are MixupE's): those
# of the library's class for that method (RegMixup: eta 1 and Mixup(alpha=10), as the paper).
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {"regmixup": {"eta": 1.0, "alpha": 10.0}}
# Options that apply by another option than the method: the option that makes them apply.
_APPLIES_WITH = {"momentum": "--optimizer sgd", "milestones": "--schedule step",
                 "gamma": "--schedule step", "threshold": "--method mixupe --version 1 or 3",
                 "fast_sign": "--method mixupe --version 3 or 4"}


def _applies(cfg: Any, name: str) -> bool:
    """Whether field ``name`` can affect ``cfg``'s run (normalisation keeps its value)."""
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


def _progress_wanted(no_progress: bool) -> bool:
    return not no_progress and sys.stderr.isatty()


_SUMMARY_METRICS = (("acc", "acc"), ("nll", "nll"), ("ece", "ece"), ("fgsm_acc", "fgsm acc"))


def _cmd_train(args: argparse.Namespace) -> int:
    from mixupe.engine import TrainConfig, train

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
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    main_rank = world <= 1 or rank == 0
    if args.dry_run:
        if main_rank:
            _out(json.dumps(cfg.to_dict(), indent=1))
            _out(f"run directory: {Path(args.runs_root) / cfg.run_name()}")
        return EXIT_OK
    result = train(cfg, runs_root=args.runs_root, resume=args.resume, overwrite=args.overwrite,
                   progress=main_rank and _progress_wanted(args.no_progress))
    if main_rank:
        final = result.final or {}
        parts = []
        for split in ("val", "test"):
            m = final.get(split) or {}
            shown = [f"{label} {m[key]:.4f}" for key, label in _SUMMARY_METRICS
                     if isinstance(m.get(key), (int, float))]  # validation has no FGSM
            if shown:
                parts.append(f"{split}: " + " ".join(shown))
        _out(f"run: {result.run_dir}")
        _out("; ".join(parts) if parts else "no metrics")
    return EXIT_OK


def _dry_run_suite(plan: Any, runs_root: Path) -> None:
    """List every run the suite would make now, with its status, and what waits on a choice."""
    from mixupe.bench.rundirs import RunReader
    from mixupe.bench.runner import cell_selections

    _out(f"suite {plan.name}: {len(plan.plans)} dataset x arm cells, {plan.total_runs} runs "
         f"when complete (reported seeds {list(plan.seeds)}, selection seeds "
         f"{list(plan.selection_seeds)} where a cell chooses among grid points)")

    record = RunReader(runs_root)  # run directories first, then the root's packs, as the runner

    def status(name: str) -> str:
        return record(name).status

    state = cell_selections(plan.plans, seeds=plan.seeds, selection_seeds=plan.selection_seeds,
                            status=status,
                            val_acc=lambda n: record(n).final("val").get("acc"))
    for cell in plan.plans:
        sel = state[(cell.dataset, cell.arm)]
        where = f"{cell.dataset} / {cell.arm}"
        if sel.waiting_for:
            _out(f"  {where}: waits for {list(sel.waiting_for)} to choose")
            continue
        runs = [(i, s) for i in (sel.eligible if sel.chose else ()) for s in sel.selection_seeds]
        if sel.chosen is not None:
            runs += [(sel.chosen, s) for s in sel.reported_seeds]
        for i, seed in runs:
            name = cell.points[i].configs[seed].run_name()
            _out(f"  [{status(name):8s}] {where} / point {i} / seed {seed}: {name}")
        if sel.chosen is None:
            _out(f"  {where}: + {len(sel.reported_seeds)} runs of the chosen point (seeds "
                 f"{list(sel.reported_seeds)}) once selected")


def _cmd_bench(args: argparse.Namespace) -> int:
    from mixupe.bench.report import write_report
    from mixupe.bench.runner import plan_suite, run_suite
    from mixupe.bench.suites import load_suite, restrict_grid

    suite = load_suite(args.suite)
    if args.restrict:
        suite = restrict_grid(suite, dict(args.restrict))
    overrides = dict(args.overrides)
    plan = plan_suite(suite, overrides=overrides, seeds=args.seeds)
    for kind, wanted, have in (("--datasets", args.datasets, [d.label for d in suite.datasets]),
                               ("--arms", args.arms, [a.label for a in suite.arms])):
        bad = sorted(set(wanted or []) - set(have))
        if bad:
            raise CliError(f"{kind} {bad} not in suite {suite.name!r}; choose from {have}")
    if args.dry_run:
        _dry_run_suite(plan, args.runs_root)
        return EXIT_OK
    progress = _progress_wanted(args.no_progress)
    executor = _bench_executor(args)
    try:
        outcome = run_suite(suite, runs_root=args.runs_root, overrides=overrides,
                            seeds=args.seeds, progress=progress, datasets=args.datasets,
                            arms=args.arms, executor=executor)
    except RunError as exc:
        if exc.outcome is None:
            raise
        _bench_summary(suite.name, exc.outcome)
        raise
    _bench_summary(suite.name, outcome)
    if args.no_report:
        return EXIT_OK
    files = write_report(args.runs_root, suite=plan.name, out=args.out)
    _out(files.text)
    _err(f"report: {files.markdown}")
    for path in files.plots:
        _err(f"plot: {path}")
    return EXIT_OK


def _bench_executor(args: argparse.Namespace) -> Any:
    from mixupe.bench.executors import make_executor

    kind = args.executor or ("processes" if (args.jobs or 1) > 1 else "sequential")
    try:
        return make_executor(kind, jobs=args.jobs, threads=args.threads_per_run,
                             runs_root=args.runs_root, address=args.address,
                             cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run,
                             max_retries=args.max_retries)
    except ConfigError as exc:  # name the flags, not the Python keywords
        raise CliError(str(exc).replace("cpus_per_run", "--cpus-per-run")
                       .replace("gpus_per_run", "--gpus-per-run")
                       .replace("max_retries", "--max-retries").replace("'address'",
                                                                         "'--address'")) from exc


def _bench_summary(name: str, outcome: Any) -> None:
    _err(f"suite {name}: {len(outcome.trained)} trained, {len(outcome.skipped)} already "
         f"done, {len(outcome.failed)} diverged, {len(outcome.errors)} failed")
    for run, reason in outcome.failed:
        _err(f"  diverged: {run}: {reason}")
    for run, reason in outcome.errors:
        _err(f"  failed: {run}: {reason}")


def _cmd_report(args: argparse.Namespace) -> int:
    from mixupe.bench.report import write_report

    files = write_report(args.runs_dir, suite=args.suite, out=args.out, plots=not args.no_plots,
                         document=args.document, preamble=args.preamble)
    _out(files.text)
    _err(f"report: {files.markdown}")
    if files.document is not None:
        _err(f"document: {files.document}")
    for path in files.plots:
        _err(f"plot: {path}")
    return EXIT_OK


def _cmd_pack(args: argparse.Namespace) -> int:
    from mixupe.bench.rundirs import pack_suite

    counts = pack_suite(args.runs_root, args.suite, args.out)
    for dataset, n in counts.items():
        _out(f"{args.suite} / {dataset}: {n} finished runs packed")
    return EXIT_OK


def _one_value(flag: str, given: Any, option: Any) -> Any:
    """The value of ``flag``, given as the flag or as ``--option NAME=``, not both differently."""
    if given is not None and option is not None and str(given) != str(option):
        raise CliError(f"{flag} {given} and --option {flag[2:]}={option} disagree; pass the "
                       f"value once, as {flag}")
    return given if given is not None else option


def _cmd_data(args: argparse.Namespace) -> int:
    import mixupe.data as data

    if args.data_command == "list":
        rows = [data.describe(name) for name in data.names()]
        _out(f"{'name':27s} {'domain':9s} {'classes':>7s}  {'size':28s} offline here")
        for r in rows:
            classes = "any" if r["num_classes"] is None else str(r["num_classes"])
            _out(f"{r['name']:27s} {r['domain']:9s} {classes:>7s}  {r['size']:28s} "
                 f"{'yes' if r['packaged'] else 'no (root=)'}")
        return EXIT_OK
    info = data.describe(args.name)  # ConfigError naming the choices for an unknown name
    options = dict(args.options)
    # root and seed are loader options too: --option root=X means --root X.
    root = _one_value("--root", args.root, options.pop("root", None))
    seed = _one_value("--seed", args.seed, options.pop("seed", None))
    if args.data_command == "prepare":
        # The same options (cache_dir= included) reach the load below, which then finds the
        # cache just built instead of building another one.
        cache = data.prepare(args.name, root=root, **options)
        if cache is not None:
            _out(f"cache: {cache}")
    if args.data_command == "describe" and not args.load:
        _out("\n".join(f"{key + ':':13s} {value}" for key, value in info.items()))
        _out("(pass --load to load it and show the split sizes)")
        return EXIT_OK
    ds = data.load(args.name, root=root, seed=0 if seed is None else seed, **options)
    lines = [
        f"name:          {ds.name}",
        f"domain:        {ds.domain}",
        f"classes:       {ds.num_classes}",
        f"input shape:   {tuple(ds.input_shape)}",
        f"train/val/test: {len(ds.train)} / {len(ds.val)} / {len(ds.test)}",
        f"source:        {ds.source}",
        f"options:       {info.get('options')}",
    ]
    _out("\n".join(lines))
    if args.data_command == "prepare":
        _out(f"{ds.name} is ready")
    return EXIT_OK


def _continue_hint(command: str, argv: list[str]) -> str:
    """How to continue after an interrupt: ``bench`` resumes by itself, ``train`` needs
    ``--resume`` (and must lose ``--overwrite``, which would wipe what was trained)."""
    if command == "bench":
        return "rerun the same command to continue"
    if command != "train":
        return "rerun the command"
    rerun = [a for a in argv if a != "--overwrite"]
    if "--resume" not in rerun:
        rerun.append("--resume")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return ("continue with the same torchrun command, ending in: "
                f"-m mixupe {shlex.join(rerun)}")
    return f"continue with: mixupe {shlex.join(rerun)}"


COMMANDS = {"train": _cmd_train, "bench": _cmd_bench, "report": _cmd_report, "pack": _cmd_pack,
            "data": _cmd_data}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mixupe`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not args.verbose:
        # Progress bars show loss and accuracy; per-epoch log lines are for logs without them.
        # A suite logs one line per run instead of one per epoch.
        quiet_engine = args.command == "bench" or (
            args.command == "train" and _progress_wanted(args.no_progress))
        if quiet_engine:
            logging.getLogger("mixupe.engine").setLevel(logging.WARNING)
        if args.command == "bench" and _progress_wanted(args.no_progress):
            logging.getLogger("mixupe.bench").setLevel(logging.WARNING)
    try:
        return COMMANDS[args.command](args)
    except NonFiniteLossError as exc:
        _err(f"mixupe {args.command}: training diverged: {exc}")
        return EXIT_DIVERGED
    except (ConfigError, InputError, CliError) as exc:
        _err(f"mixupe {args.command}: error: {exc}")
        return EXIT_USAGE
    except (DataUnavailableError, MixupeError) as exc:
        _err(f"mixupe {args.command}: error: {exc}")
        return EXIT_OTHER
    except BrokenPipeError:  # e.g. `mixupe bench full --dry-run | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OTHER
    except KeyboardInterrupt:
        _err(f"mixupe {args.command}: interrupted; {_continue_hint(args.command, argv)}")
        return 130
    except Exception:  # a bug: keep the traceback, it is what a bug report needs
        traceback.print_exc()
        return EXIT_OTHER
