"""The training configuration: one frozen dataclass that names every hyper-parameter of a run.

The run directory is derived from it (:meth:`TrainConfig.run_name`), so two runs that would
train the same model share a directory and two that would not never do.

Run names survive growth: a name shows, and its hash covers, the options that differ from the
naming table :data:`NAMING_DEFAULTS`, not from the dataclass defaults (the naming code and
its tables are in :mod:`mixupe.engine.naming`); a stored ``config.json`` that lacks a newer
field is read with that field's naming value (:meth:`TrainConfig.from_stored`).

>>> cfg = TrainConfig(dataset="digits", method="mixupe", alpha=2.0, eta=0.01)
>>> cfg.run_name().split("/")[:3]
['digits', 'mlp', 'mixupe-v3-a2-eta0.01-t1-sign-1']
>>> TrainConfig.from_dict(cfg.to_dict()) == cfg
True
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from mixupe.engine import naming
from mixupe.engine.naming import (  # the naming tables, importable from here as before
    _NAMING_ADDED,
    _SHORT,  # noqa: F401
    NAMING_DEFAULTS,
    data_identity,  # noqa: F401
)
from mixupe.errors import ConfigError

__all__ = ["METHODS", "NAMING_DEFAULTS", "TrainConfig"]

# The mixers (each a method alone, or the mixing of MixupE / RegMixup).
MIXERS = ("mixup", "cutmix", "manifold", "mixup-cutmix", "fmix", "resizemix", "saliencymix",
          "puzzlemix", "comixup", "alignmix")
# mixup-ce: the study's control arm, a mixing loss plus eta * c * CE on the clean batch
METHODS = ("erm", "mixup", "cutmix", "manifold", "mixupe", *MIXERS[3:], "regmixup", "mixup-ce")
MIXINGS = ("auto", *MIXERS)
CLEAN_PASSES = ("separate", "fused")
FULL_EVALS = ("end", "each-epoch")
AUGMENTS = ("none", "crop-flip")  # mixupe.data.augment
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")
AMP_DTYPES = ("auto", "bf16", "fp16")

_OPTION_FIELDS = ("model_options", "data_options", "mixer_options")


def _as_options(value: Any, name: str) -> tuple[tuple[str, Any], ...]:
    """Turn a dict or a sequence of pairs into a sorted tuple of (key, hashable value) pairs."""
    if value is None:
        return ()
    if isinstance(value, dict):
        items = list(value.items())
    else:
        try:
            items = [(k, v) for k, v in value]
        except (TypeError, ValueError):
            raise ConfigError(
                f"{name}={value!r} is not a mapping; pass a dict such as {{'width': 256}}"
            ) from None
    out = []
    for key, val in items:
        if not isinstance(key, str):
            raise ConfigError(f"{name} key {key!r} is not a string; use option names as keys")
        out.append((key, _freeze(val)))
    return tuple(sorted(out))


def _freeze(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


def _choice(cfg: Any, name: str, allowed: tuple[str, ...]) -> None:
    value = getattr(cfg, name)
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not supported; choose one of {allowed}")


def _number(cfg: Any, name: str, *, low: float, strict: bool = False, high: float | None = None,
            integer: bool = False) -> None:
    value = getattr(cfg, name)
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(
            f"{name}={value!r} must be {'an integer' if integer else 'a number'}"
        )
    if not math.isfinite(value):
        raise ConfigError(f"{name}={value!r} must be finite; pass a finite number")
    bad_low = value <= low if strict else value < low
    if bad_low or (high is not None and value > high):
        rel = ">" if strict else ">="
        bound = f" and <= {high}" if high is not None else ""
        raise ConfigError(
            f"{name}={value!r} is out of range; it must be {rel} {low}{bound}"
        )


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Every hyper-parameter of one training run.

    Invalid values raise :class:`~mixupe.errors.ConfigError` at construction.

    The Mixup family: ``method`` names a mixer alone, ``"mixupe"`` / ``"regmixup"`` wrap the
    mixer named by ``mixing``; ``mixer_options`` go to the mixer's constructor (e.g.
    ``{"grid_sizes": [2, 4]}`` for Puzzle Mix); timm's knobs ``mix_prob`` (mix a batch at all),
    ``off_epoch`` (no mixing from that epoch on), ``label_alpha`` (Mixup's decoupled label
    lambda), ``cutmix_alpha``/``switch_prob`` (the "mixup-cutmix" switch) and
    ``cutmix_minmax`` (box sides from a range); ``eta`` is also RegMixup's weight; ``sam_rho``
    wraps the optimiser in SAM (``method="mixup"`` with SAM is the G-Mix baseline).

    ``seed`` fixes the initialisation, the data order and the mixing draws; ``data_seed``
    fixes the train/validation split and any training subset: ``None`` (the default) draws
    them from ``seed``, so seeds also vary the split and the intervals over seeds include
    split variance; an integer keeps one split for every seed. An official test set stays
    fixed either way.

    Validation metrics (without the FGSM attack) are computed after every epoch, for the
    learning curves and the best-epoch choice. ``full_eval="end"`` (the default) evaluates
    the test split, the FGSM attack and the reliability bins only at the end, for the final
    model and for the model of the best-validation epoch (kept in the checkpoint);
    ``"each-epoch"`` evaluates everything after every epoch (the first study's rule).
    ``lambda_sampler`` draws Beta lambdas from public uniforms (``"transform"``) or, to
    reproduce runs made before that sampler existed, as mixupe 0.1 did (``"dirichlet"``).

    ``augment="crop-flip"`` augments every training batch of 2-D images before it is mixed,
    as the CIFAR code of the Mixup literature does: a random crop of the image padded by 4
    black pixels, and a horizontal flip with probability 1/2 (:func:`mixupe.data.augment.
    crop_flip`); validation and test images are not augmented. ``"none"`` (the default)
    trains on the images as they are.

    ``val_every=k`` validates only every k-th epoch and at the last (with ``"end"``), for
    settings where the validation split is large next to the training data; the best epoch
    is then chosen among the validated epochs.

    ``amp=True`` trains under CUDA autocast in ``amp_dtype``: ``"bf16"``, ``"fp16"`` (with a
    gradient scaler, checkpointed) or ``"auto"`` (bf16 where the GPU supports it, else fp16).
    ``deterministic=True`` makes PyTorch use deterministic kernels only, so a CUDA run repeats
    and resumes bit for bit on the same machine and software; an op without such a kernel
    raises (on CUDA: the backward of adaptive average pooling, which the CNNs and the ResNet
    use). It is not part of the run name. A CPU run repeats and resumes exactly anyway.

    >>> TrainConfig(method="mixup", alpha=0.4).alpha
    0.4
    """

    dataset: str = "digits"
    model: str = "mlp"
    method: str = "erm"
    alpha: float = 1.0
    per_sample: bool = False
    mixing: str = "auto"
    mix_layers: tuple[str, ...] | None = None
    label_smoothing: float = 0.0
    eta: float = 1e-3
    version: int = 3
    threshold: float | None = 1.0
    fast_sign: int = -1
    rescale: bool = True
    clean_pass: str = "separate"
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_epochs: int = 0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    model_options: tuple[tuple[str, Any], ...] = field(default=())
    data_options: tuple[tuple[str, Any], ...] = field(default=())
    fgsm_eps: float = 0.03
    ece_bins: int = 15
    full_eval: str = "end"
    val_every: int = 1
    lambda_sampler: str = "transform"
    seed: int = 0
    data_seed: int | None = None
    mixer_options: tuple[tuple[str, Any], ...] = field(default=())
    mix_prob: float = 1.0
    off_epoch: int | None = None
    label_alpha: float | None = None
    cutmix_alpha: float | None = None
    cutmix_minmax: tuple[float, float] | None = None
    switch_prob: float = 0.5
    sam_rho: float | None = None
    clean_fraction: float = 1.0
    cutmix_axes: tuple[int, ...] | None = None
    augment: str = "none"
    device: str = "auto"
    amp: bool = False
    amp_dtype: str = "auto"
    deterministic: bool = False

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name in _OPTION_FIELDS:
            set_(self, name, _as_options(getattr(self, name), name))
        if isinstance(self.cutmix_minmax, list):
            set_(self, "cutmix_minmax", tuple(self.cutmix_minmax))
        if self.mix_layers is not None:
            if isinstance(self.mix_layers, str):
                set_(self, "mix_layers", (self.mix_layers,))
            else:
                set_(self, "mix_layers", tuple(self.mix_layers))
        set_(self, "milestones", tuple(self.milestones))
        if isinstance(self.cutmix_axes, int) and not isinstance(self.cutmix_axes, bool):
            set_(self, "cutmix_axes", (self.cutmix_axes,))
        elif isinstance(self.cutmix_axes, list):
            set_(self, "cutmix_axes", tuple(self.cutmix_axes))
        self._check()

    def _check(self) -> None:
        """Refuse invalid values, topic by topic (the first problem found is raised)."""
        self._check_names()
        self._check_method()
        self._check_training()
        self._check_evaluation()
        self._check_family()
        self._check_placement()

    def _check_names(self) -> None:
        for name in ("dataset", "model"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"{name}={getattr(self, name)!r} must be a non-empty name")
        _choice(self, "method", METHODS)
        _choice(self, "mixing", MIXINGS)
        _choice(self, "clean_pass", CLEAN_PASSES)
        _choice(self, "full_eval", FULL_EVALS)
        _number(self, "val_every", low=1, integer=True)
        _choice(self, "lambda_sampler", ("transform", "dirichlet"))
        _choice(self, "augment", AUGMENTS)
        _choice(self, "optimizer", OPTIMIZERS)
        _choice(self, "schedule", SCHEDULES)

    def _check_method(self) -> None:
        _number(self, "alpha", low=0.0, strict=True)
        _number(self, "label_smoothing", low=0.0, high=0.999)
        _number(self, "eta", low=0.0)
        _number(self, "version", low=1, high=4, integer=True)
        _number(self, "clean_fraction", low=0.0, strict=True, high=1.0)
        axes = self.cutmix_axes
        if axes is not None and (
            not isinstance(axes, tuple)
            or len(axes) not in (1, 2)
            or any(isinstance(a, bool) or not isinstance(a, int) or a == 0 for a in axes)
            or len(set(axes)) != len(axes)
        ):
            raise ConfigError(
                f"cutmix_axes={axes!r} must be one or two distinct non-zero axes of the batch, "
                "e.g. (1,) for (B, L, D) sequences or (3,) for time in (B, 1, F, T); None "
                "chooses by the input's rank"
            )
        if self.threshold is not None:
            _number(self, "threshold", low=-math.inf)
        if self.fast_sign not in (-1, 1) or isinstance(self.fast_sign, bool):
            raise ConfigError(f"fast_sign={self.fast_sign!r} must be -1 or 1")

    def _check_training(self) -> None:
        _number(self, "epochs", low=1, integer=True)
        _number(self, "batch_size", low=1, integer=True)
        _number(self, "lr", low=0.0, strict=True)
        _number(self, "momentum", low=0.0, high=0.999999)
        _number(self, "weight_decay", low=0.0)
        _number(self, "warmup_epochs", low=0, integer=True)
        if self.warmup_epochs > self.epochs:
            raise ConfigError(
                f"warmup_epochs={self.warmup_epochs} exceeds epochs={self.epochs}; "
                "lower warmup_epochs or raise epochs"
            )
        if any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in self.milestones):
            raise ConfigError(
                f"milestones={self.milestones!r} must be positive epoch numbers, e.g. (30, 60)"
            )
        if list(self.milestones) != sorted(set(self.milestones)):
            raise ConfigError(
                f"milestones={self.milestones!r} must be strictly increasing, e.g. (30, 60)"
            )
        if self.schedule == "step" and not self.milestones:
            raise ConfigError(
                "schedule='step' needs milestones, e.g. milestones=(30, 60); "
                "or use schedule='cosine'"
            )
        _number(self, "gamma", low=0.0, strict=True, high=1.0)

    def _check_evaluation(self) -> None:
        _number(self, "fgsm_eps", low=0.0)
        _number(self, "ece_bins", low=1, integer=True)
        _number(self, "seed", low=0, integer=True)
        if self.data_seed is not None:
            _number(self, "data_seed", low=0, integer=True)
        if any(key == "seed" for key, _ in self.data_options):
            raise ConfigError(
                "data_options sets 'seed'; the split seed is the config's data_seed (None: the "
                "run seed), so pass data_seed=N instead"
            )

    def _check_placement(self) -> None:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(self.device)):
            raise ConfigError(
                f"device={self.device!r} is not supported; use 'auto', 'cpu', 'cuda' or 'cuda:N'"
            )
        if self.mix_layers is not None and (
            not self.mix_layers or not all(isinstance(s, str) and s for s in self.mix_layers)
        ):
            raise ConfigError(
                f"mix_layers={self.mix_layers!r} must be a non-empty sequence of submodule "
                "names, or None for the model's own mix_layers"
            )

    def _check_family(self) -> None:
        _number(self, "mix_prob", low=0.0, high=1.0)
        _number(self, "switch_prob", low=0.0, high=1.0)
        for name in ("label_alpha", "cutmix_alpha", "sam_rho"):
            if getattr(self, name) is not None:
                _number(self, name, low=0.0, strict=True)
        if self.off_epoch is not None:
            _number(self, "off_epoch", low=1, integer=True)
        mm = self.cutmix_minmax
        if mm is not None and not (
            isinstance(mm, tuple) and len(mm) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in mm)
            and 0 < mm[0] < mm[1] <= 1
        ):
            raise ConfigError(
                f"cutmix_minmax={mm!r} must be (lo, hi) with 0 < lo < hi <= 1, fractions of the "
                "side length, e.g. (0.2, 0.8); or None to draw boxes from lambda"
            )
        if self.sam_rho is not None and self.amp:
            raise ConfigError("sam_rho with amp=True is not supported; drop one of them")
        if self.amp_dtype not in AMP_DTYPES:
            raise ConfigError(f"amp_dtype={self.amp_dtype!r} is not supported; choose one of "
                              f"{AMP_DTYPES}")
        if self.amp_dtype != "auto" and not self.amp:
            raise ConfigError(f"amp_dtype={self.amp_dtype!r} has no effect without amp=True; "
                              "add --amp (amp=True) or drop --amp-dtype")
        if not isinstance(self.deterministic, bool):
            raise ConfigError(f"deterministic={self.deterministic!r} must be True or False")

    @property
    def split_seed(self) -> int:
        """The seed of the train/validation split: ``data_seed``, or ``seed`` when None.

        >>> TrainConfig(seed=3).split_seed, TrainConfig(seed=3, data_seed=0).split_seed
        (3, 0)
        """
        return self.seed if self.data_seed is None else self.data_seed

    # ------------------------------------------------------------------ normalisation
    def normalized(self) -> TrainConfig:
        """A copy with options that cannot affect this run reset to their defaults.

        Equivalent runs then share one run name:

        >>> erm = TrainConfig(method="erm").normalized()
        >>> TrainConfig(method="erm", eta=0.5).normalized() == erm
        True

        Reset options take their naming value (:data:`NAMING_DEFAULTS`).
        """
        reset = naming.unused_options(self)
        return dataclasses.replace(self, **{name: NAMING_DEFAULTS[name] for name in reset})

    def mixer_name(self) -> str | None:
        """The mixer this run uses: the method, or ``mixing`` for MixupE, RegMixup and mixup-ce
        ("auto" there is decided by the data domain); None for ERM.

        >>> TrainConfig(method="mixupe", mixing="fmix").mixer_name()
        'fmix'
        """
        if self.method == "erm":
            return None
        if self.method in ("mixupe", "regmixup", "mixup-ce"):
            return self.mixing
        return self.method

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists, option pairs become dicts)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in _OPTION_FIELDS:
                value = {k: _thaw(v) for k, v in value}
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build a config from a dict such as :meth:`to_dict` returns or a parsed TOML table."""
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a dict of options, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(
                f"unknown config keys {unknown}; remove them or use one of {sorted(known)}"
            )
        values = dict(d)
        for key in ("mix_layers", "milestones", "cutmix_minmax", "cutmix_axes"):
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        try:
            return cls(**values)
        except TypeError as exc:  # e.g. a value of an impossible type for a comparison
            raise ConfigError(f"bad config value: {exc}; check the option types") from exc

    @classmethod
    def from_stored(cls, d: dict[str, Any]) -> TrainConfig:
        """Read a config that a run stored (``config.json``), possibly by an older version.

        A field the stored config lacks did not exist when the run was made, so the run
        behaved as that field's naming value says (e.g. ``data_seed=0``), not as its current
        default:

        >>> TrainConfig.from_stored({"dataset": "letter"}).data_seed
        0
        >>> TrainConfig.from_dict({"dataset": "letter"}).data_seed is None
        True
        """
        if not isinstance(d, dict):
            raise ConfigError(f"a stored config must be a dict of options, got "
                              f"{type(d).__name__}")
        return cls.from_dict({**{k: v for k, v in _NAMING_ADDED.items() if k not in d}, **d})

    # ------------------------------------------------------------------ naming
    def config_hash(self) -> str:
        """Six hex digits identifying the normalised config (placement options excluded).

        The hash covers every field of the version-1 naming table and each later field whose
        value differs from its naming value, so a new field at its naming value changes no
        hash (see :mod:`mixupe.engine.naming`).
        """
        return naming.config_hash(self)

    def run_name(self) -> str:
        """A readable relative path naming the run: dataset/model/method-options/seed-hash.

        Every option that differs from its naming value (:data:`NAMING_DEFAULTS`) appears; the
        hash covers all options (except ``device`` and ``deterministic``, which say where and
        how a run executes, not what it computes). A data path (``data_options`` ``root``)
        enters both as its content's identity (:func:`~mixupe.engine.naming.data_identity`),
        so moving or remounting the data keeps the name; ``cache_dir`` enters neither.
        ``config.json`` keeps the paths as given.

        >>> TrainConfig(method="mixup", alpha=0.2, epochs=3).run_name()[:-6]
        'digits/mlp/mixup-a0.2/e3-splitrun-fevalend-lamtransform-seed0-'
        >>> TrainConfig(method="mixup", alpha=0.2, epochs=3, data_seed=0,
        ...             full_eval="each-epoch", lambda_sampler="dirichlet").run_name()[:-6]
        'digits/mlp/mixup-a0.2/e3-seed0-'
        """
        return naming.run_name(self)

    def run_names(self) -> tuple[str, ...]:
        """:meth:`run_name` first, then the names earlier naming rules gave this run (see
        :func:`~mixupe.engine.naming.run_names`); a run is looked up under each in turn.

        >>> print(*(n.split("/")[2] for n in TrainConfig(method="resizemix").run_names()))
        resizemix resizemix-a1
        """
        return naming.run_names(self)
