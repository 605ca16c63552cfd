"""Run names and config hashes: how a :class:`~mixupe.engine.config.TrainConfig` names its run.

Run names survive growth: a name shows, and its hash covers, the options that differ from the
naming table :data:`NAMING_DEFAULTS`, not from the dataclass defaults. The table holds the
first release's defaults, frozen, and every field added since enters it with the value that
reproduces the behaviour from before it existed. Adding a field, or changing a default, thus
renames no existing run; a stored ``config.json`` that lacks a newer field is read with that
field's naming value (:meth:`TrainConfig.from_stored
<mixupe.engine.config.TrainConfig.from_stored>`).

>>> from mixupe.engine.config import TrainConfig
>>> run_name(TrainConfig(method="mixup", alpha=0.2, epochs=3, data_seed=0,
...                      full_eval="each-epoch", lambda_sampler="dirichlet"))[:-6]
'digits/mlp/mixup-a0.2/e3-seed0-'
>>> config_hash(TrainConfig()) == TrainConfig().config_hash()
True
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

__all__ = ["NAMING_DEFAULTS", "config_hash", "data_identity", "run_name", "unused_options"]

# Options that say where and how a run executes, not what it computes: left out of the run
# name and its hash (deterministic only chooses among kernels for the same computation).
_PLACEMENT_FIELDS = ("device", "deterministic")

# The naming table, version 1: the defaults of the first release, frozen. A run name shows
# the options whose value differs from this table; normalisation resets options that cannot
# affect a run to these values. Never edit a value here: that would rename committed runs.
_NAMING_V1: dict[str, Any] = {
    "dataset": "digits", "model": "mlp", "method": "erm", "alpha": 1.0, "per_sample": False,
    "mixing": "auto", "mix_layers": None, "label_smoothing": 0.0, "eta": 1e-3, "version": 3,
    "threshold": 1.0, "fast_sign": -1, "rescale": True, "clean_pass": "separate",
    "epochs": 10, "batch_size": 128, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9,
    "weight_decay": 1e-4, "schedule": "cosine", "warmup_epochs": 0, "milestones": (),
    "gamma": 0.1, "model_options": (), "data_options": (), "fgsm_eps": 0.03, "ece_bins": 15,
    "seed": 0, "device": "auto", "amp": False,
}
# Fields added after version 1, each with the value that reproduces the behaviour from before
# it existed (its dataclass default may differ). Append new fields here; never edit a value.
# - data_seed: runs used to load every dataset with the loader's default seed 0.
# - full_eval: runs used to evaluate test and FGSM after every epoch.
# - the Mixup family's knobs: before them every batch was mixed, by one Beta(alpha, alpha)
#   lambda for inputs and labels, CutMix boxes came from lambda, and no SAM was used.
# - val_every: runs used to validate after every epoch.
# - lambda_sampler: runs used to draw Beta lambdas with torch's private Dirichlet sampler.
# - clean_fraction: MixupE's clean pass used to run on the whole batch.
# - cutmix_axes: CutMix used to choose its box axes from the input's rank.
# - amp_dtype: --amp used to pick bf16 where the GPU supports it, else fp16.
# - deterministic: runs used PyTorch's default (possibly non-deterministic) kernels.
# - augment: runs used to train on the images as they are.
_NAMING_ADDED: dict[str, Any] = {
    "data_seed": 0,
    "full_eval": "each-epoch",
    "mixer_options": (),
    "mix_prob": 1.0,
    "off_epoch": None,
    "label_alpha": None,
    "cutmix_alpha": None,
    "cutmix_minmax": None,
    "switch_prob": 0.5,
    "sam_rho": None,
    "val_every": 1,
    "clean_fraction": 1.0,
    "cutmix_axes": None,
    "lambda_sampler": "dirichlet",
    "amp_dtype": "auto",
    "deterministic": False,
    "augment": "none",
}
NAMING_DEFAULTS: dict[str, Any] = {**_NAMING_V1, **_NAMING_ADDED}

# Short labels used in run names for options that differ from their naming value.
_SHORT = {
    "alpha": "a",
    "per_sample": "ps",
    "mixing": "mix",
    "mix_layers": "layers",
    "label_smoothing": "ls",
    "eta": "eta",
    "version": "v",
    "threshold": "t",
    "fast_sign": "sign",
    "rescale": "rescale",
    "clean_pass": "clean",
    "epochs": "e",
    "batch_size": "b",
    "optimizer": "opt",
    "lr": "lr",
    "momentum": "mom",
    "weight_decay": "wd",
    "schedule": "sched",
    "warmup_epochs": "warm",
    "milestones": "ms",
    "gamma": "gamma",
    "model_options": "mo",
    "data_options": "do",
    "fgsm_eps": "fgsm",
    "ece_bins": "bins",
    "amp": "amp",
    "data_seed": "split",
    "full_eval": "feval",
    "val_every": "ve",
    "lambda_sampler": "lam",
    "mixer_options": "mxo",
    "mix_prob": "p",
    "off_epoch": "off",
    "label_alpha": "la",
    "cutmix_alpha": "ca",
    "cutmix_minmax": "minmax",
    "switch_prob": "sw",
    "sam_rho": "sam",
    "clean_fraction": "cf",
    "cutmix_axes": "axes",
    "amp_dtype": "ampdt",
    "augment": "aug",
}
_METHOD_PART = (
    "alpha", "per_sample", "mixing", "mix_layers", "label_smoothing", "eta", "version",
    "threshold", "fast_sign", "rescale", "clean_pass", "mixer_options", "mix_prob",
    "off_epoch", "label_alpha", "cutmix_alpha", "cutmix_minmax", "switch_prob",
    "clean_fraction", "cutmix_axes",
)


# Data options that say where files are, not what they hold: a run is named and hashed by
# what ``root`` holds (data_identity), and ``cache_dir`` is left out; config.json keeps both.
_DATA_PATH_OPTIONS = ("root",)
_DATA_PLACEMENT_OPTIONS = ("cache_dir",)
_WHOLE_FILE_BYTES = 64 << 20


@functools.lru_cache(maxsize=64)
def data_identity(path: str) -> str:
    """A run-name label of a data path that does not depend on where it is mounted: the file
    or folder name and six hex digits of its content (a file's bytes up to 64 MiB, else its
    size; a folder's file names and sizes, hidden files left out). A path that does not
    exist (yet) is labelled by its name alone. Cached per path for the process.

    >>> data_identity("/nowhere/TOY")
    'TOY'
    """
    where = Path(path).expanduser()
    name = where.resolve().name or "root"
    digest = hashlib.sha256()
    if where.is_file():
        size = where.stat().st_size
        digest.update(where.read_bytes() if size <= _WHOLE_FILE_BYTES else str(size).encode())
    elif where.is_dir():
        for folder, dirs, files in os.walk(where):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for file in sorted(f for f in files if not f.startswith(".")):
                full = Path(folder) / file
                rel = full.relative_to(where).as_posix()
                digest.update(f"{rel}\0{full.stat().st_size}\n".encode())
    else:
        return name
    return f"{name}-{digest.hexdigest()[:6]}"


def _named_data_options(options: tuple[tuple[str, Any], ...]) -> tuple[tuple[str, Any], ...]:
    """``data_options`` as a run is named and hashed by: paths by their content's identity."""
    return tuple((key, data_identity(str(value)) if key in _DATA_PATH_OPTIONS
                  and isinstance(value, str) else value)
                 for key, value in options if key not in _DATA_PLACEMENT_OPTIONS)


def _fmt(value: Any) -> str:
    """A compact, file-name-safe rendering of an option value."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, tuple):
        text = "_".join(
            f"{_fmt(v[0])}{_fmt(v[1])}" if isinstance(v, tuple) and len(v) == 2 else _fmt(v)
            for v in value
        )
    elif value is None:
        text = "none"
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9.+_-]", "", text)


# Options of MixupE alone, and the Mixup family's knobs.
_MIXUPE_ONLY = frozenset({"mixing", "eta", "version", "threshold", "fast_sign", "rescale",
                          "clean_pass", "clean_fraction"})
_KNOBS = frozenset({"mixer_options", "mix_prob", "off_epoch", "label_alpha", "cutmix_alpha",
                    "cutmix_minmax", "switch_prob", "cutmix_axes"})


def unused_options(config: Any) -> set[str]:
    """The options that cannot affect ``config``'s run (normalisation resets them to their
    naming values, so equivalent runs share one name).

    >>> from mixupe.engine.config import TrainConfig
    >>> sorted(unused_options(TrainConfig(method="mixupe", version=2)))[:3]
    ['amp_dtype', 'cutmix_alpha', 'cutmix_axes']
    """
    reset = _method_unused(config) | _mixer_unused(config.mixer_name())
    if config.schedule != "step":
        reset |= {"milestones", "gamma"}
    if config.optimizer != "sgd":
        reset.add("momentum")
    if not config.amp:
        reset.add("amp_dtype")
    return reset


def _method_unused(config: Any) -> set[str]:
    if config.method == "erm":
        return set(_MIXUPE_ONLY | _KNOBS | {"alpha", "per_sample", "mix_layers",
                                            "lambda_sampler"})
    if config.method == "mixupe":
        reset = set()
        if config.version in (2, 4):
            reset.add("threshold")  # versions 2 and 4 use every sample
        if config.version in (1, 2):
            reset.add("fast_sign")  # the sign only applies to the fast score
        return reset
    if config.method in ("regmixup", "mixup-ce"):
        return set(_MIXUPE_ONLY - {"mixing", "eta"})
    return set(_MIXUPE_ONLY)


def _mixer_unused(mixer: str | None) -> set[str]:
    reset = set()
    if mixer not in (None, "auto", "manifold", "alignmix"):
        reset.add("mix_layers")
    if mixer not in ("mixup", "mixup-cutmix", "auto"):
        reset.add("label_alpha")
    if mixer not in ("cutmix", "mixup-cutmix"):
        reset |= {"cutmix_minmax", "cutmix_axes"}
    if mixer != "mixup-cutmix":
        reset |= {"cutmix_alpha", "switch_prob"}
    return reset


def config_hash(config: Any) -> str:
    """Six hex digits identifying the normalised config (placement options excluded).

    The hash covers every field of the version-1 naming table and each later field whose
    value differs from its naming value, so a new field at its naming value changes no
    hash.
    """
    norm = config.normalized()
    norm = dataclasses.replace(norm, data_options=_named_data_options(norm.data_options))
    cfg = norm.to_dict()
    d = {k: cfg[k] for k in _NAMING_V1 if k not in _PLACEMENT_FIELDS}
    d |= {k: cfg[k] for k, legacy in _NAMING_ADDED.items()
          if k not in _PLACEMENT_FIELDS and getattr(norm, k) != legacy}
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:6]


# The rules a run's readable name is made by (the hash is the same under every rule):
# 1: the first release's, kept only to find runs written under it (:func:`run_names`);
# 2 (issue 23): a name holds only the fields that apply to its run: RegMixup and Mixup + clean
#    CE show no MixupE threshold or sign, and a mixer that draws no Beta lambda (ResizeMix)
#    shows no alpha.
NAMING_RULES = 2
NO_ALPHA_MIXERS = frozenset({"resizemix"})


def run_names(config: Any) -> tuple[str, ...]:
    """Every name ``config``'s run may be stored under: the current rules' name first, then
    the names earlier rules gave it (runs written before a rule changed keep their names).

    >>> from mixupe.engine.config import TrainConfig
    >>> print(*(n.split("/")[2] for n in run_names(TrainConfig(method="regmixup", eta=1.0))))
    regmixup-a1-eta1 regmixup-a1-eta1-t1-sign-1
    """
    names = [run_name(config, rules=r) for r in range(NAMING_RULES, 0, -1)]
    return tuple(dict.fromkeys(names))


_NUMBER = r"(?:\d[\d.]*(?:e[+-]?\d+)?|inf|nan)"  # a float as _fmt writes it
_RESIZEMIX = re.compile(r"^resizemix-a|-mixresizemix(?:-|$)")
_LEAD_ALPHA = re.compile(rf"^(resizemix|mixupe-v\d|regmixup|mixup-ce)-a{_NUMBER}(?=-|$)")


def current_name(name: str) -> str:
    """The name the current rules give a run that earlier rules stored as ``name`` (the
    readable part alone differs; the hash is the same), so a reader finds runs written
    before a rule changed. Names the rules never changed come back as they are.

    >>> current_name("letter/mlp/mixup-ce-a0.5-eta10-t1-sign-1/e100-seed0-abcdef")
    'letter/mlp/mixup-ce-a0.5-eta10/e100-seed0-abcdef'
    >>> current_name("fashion-mnist/small-cnn/resizemix-a0.5/e100-seed0-abcdef")
    'fashion-mnist/small-cnn/resizemix/e100-seed0-abcdef'
    """
    parts = name.split("/")
    if len(parts) != 4 or len(parts[2]) >= 120:  # a cut method part cannot be rebuilt
        return name
    method = parts[2]
    if _RESIZEMIX.search(method):
        method = _LEAD_ALPHA.sub(r"\1", method, count=1)
    if method.startswith(("regmixup-", "mixup-ce-")):
        method = method.replace("-t1-sign-1", "", 1)  # their normalised threshold and sign
    return "/".join([*parts[:2], method, parts[3]])


def run_name(config: Any, *, rules: int = NAMING_RULES) -> str:
    """A readable relative path naming the run: dataset/model/method-options/seed-hash.

    Every option that differs from its naming value (:data:`NAMING_DEFAULTS`) appears; the
    hash covers all options (except ``device`` and ``deterministic``, which say where and
    how a run executes, not what it computes). A data path (``data_options`` ``root``)
    enters both as its content's identity (:func:`data_identity`), so moving or
    remounting the data keeps the name; ``cache_dir`` enters neither. ``config.json``
    keeps the paths as given. ``rules`` picks the naming rules (:data:`NAMING_RULES`).
    """
    cfg = config.normalized()

    def differs(name: str) -> bool:
        value = getattr(cfg, name)
        if name == "data_options":
            value = _named_data_options(value)
        return value != NAMING_DEFAULTS[name]

    def token(name: str) -> str:
        value = getattr(cfg, name)
        if name == "data_options":
            value = _named_data_options(value)
        if name == "data_seed" and value is None:
            return f"{_SHORT[name]}run"  # the split drawn from the run seed
        return f"{_SHORT[name]}{_fmt(value)}"

    method = [cfg.method]
    if cfg.method == "mixupe":
        method.append(f"v{cfg.version}")
    if cfg.method != "erm" and (rules < 2 or cfg.mixer_name() not in NO_ALPHA_MIXERS):
        method.append(f"a{_fmt(cfg.alpha)}")
    if cfg.method in ("mixupe", "regmixup", "mixup-ce"):
        method.append(f"eta{_fmt(cfg.eta)}")
    if cfg.method == "mixupe" or (rules < 2 and cfg.method in ("regmixup", "mixup-ce")):
        if cfg.version in (1, 3):
            method.append(f"t{_fmt(cfg.threshold)}")
        if cfg.version in (3, 4):
            method.append(f"sign{cfg.fast_sign}")
    shown = {"alpha", "version", "eta", "threshold", "fast_sign"}
    method += [token(n) for n in _METHOD_PART if n not in shown and differs(n)]
    train = [token(n) for n in _SHORT if n not in _METHOD_PART and differs(n)]
    train += [f"seed{cfg.seed}", cfg.config_hash()]
    parts = [_fmt(cfg.dataset), _fmt(cfg.model), "-".join(method)[:120],
             "-".join(train)[-120:].lstrip("-")]
    return "/".join(parts)
