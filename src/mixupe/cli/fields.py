"""The ``--FIELD`` options of ``mixupe train``: one per TrainConfig field, typed by its hint."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any

from mixupe.cli.options import key_value, none_or, tuple_of

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
    "augment": "training-batch augmentation of 2-D images: none, or crop-flip (random crop "
               "after 4 black pixels of padding, and a horizontal flip, as in CIFAR code)",
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
            parser.add_argument(*names, action="append", type=key_value, metavar="KEY=VALUE",
                                **kw)
            continue
        parse, metavar = _typed_parser(f.name, kind, element)
        if parse is None:
            raise TypeError(f"no command-line parser for TrainConfig.{f.name} of type "
                            f"{hints[f.name]}; add one to mixupe.cli._add_field_options")
        parser.add_argument(*names, type=none_or(parse) if optional else parse,
                            metavar=metavar + none, **kw)


def _typed_parser(name: str, kind: Any, element: Any) -> tuple[Any, str]:
    """The value parser and metavar of a field of type ``kind`` (None: no parser known)."""
    parse, metavar = {
        int: (int, "INT"), float: (float, "FLOAT"), str: (str, name.upper()),
    }.get(kind, (None, ""))
    if element in (str, int, float):  # tuple[X, ...] or a fixed tuple[X, X]
        args = typing.get_args(kind)
        length = None if args[-1] is Ellipsis else len(args)
        if all(a is element for a in args if a is not Ellipsis):
            parse = tuple_of(element, length)
            word = "NAME" if element is str else element.__name__.upper()
            metavar = ",".join([word] * (length or 1)) + ("" if length else "[,...]")
    return parse, metavar
