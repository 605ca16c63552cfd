"""The training loop: build data, model and objective from a config, train, evaluate, checkpoint.

>>> import tempfile
>>> cfg = TrainConfig(dataset="digits", epochs=1, model_options={"hidden": (16,)})
>>> result = train(cfg, runs_root=tempfile.mkdtemp(), progress=False)
>>> result.complete, sorted(result.final["test"])
(True, ['acc', 'brier', 'ece', 'fgsm_acc', 'nll', 'reliability'])
>>> result.best["epoch"]
1

Guarantees:
- evaluation is on clean data (``model.eval()``, no mixing): validation after every epoch,
  test, FGSM and reliability at the end for the final model and for the best-validation
  epoch's model (``full_eval="each-epoch"``: everything after every epoch);
- a CPU run is bit-repeatable for a given config, and ``resume=True`` continues exactly
  (every generator and the global RNG state used by dropout are checkpointed); on CUDA the
  same holds only with ``deterministic=True`` (on the same GPU and software): by default
  atomics (``index_add_``, scatter-adds in backward passes) and cuDNN's choice of algorithm
  make runs, and a resumed run against an uninterrupted one, differ in the last bits;
- a non-finite loss stops the run with :class:`~mixupe.errors.NonFiniteLossError`, writes
  ``failed.json`` and keeps the checkpoint of the last finished epoch;
- under ``torchrun`` the same call trains with DistributedDataParallel (see
  :mod:`mixupe.engine.distributed`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mixupe.data.augment import crop_flip
from mixupe.engine import distributed as D
from mixupe.engine.checkpoint import load_checkpoint, save_checkpoint
from mixupe.engine.config import TrainConfig
from mixupe.engine.evaluation import batches as train_batches
from mixupe.engine.evaluation import best_metrics, evaluate, final_metrics, fit_data_mean
from mixupe.engine.objective import build_objective, set_epoch
from mixupe.engine.optim import build_optimizer, build_scheduler
from mixupe.engine.rundir import RunDir
from mixupe.engine.runtime import (
    CUBLAS_ENV,  # noqa: F401 - importable from here as before
    amp_setup,
    derive_seed,
    deterministic_kernels,
    environment,
)
from mixupe.engine.state import (
    BestEpoch,
    Entry,
    ModelDigest,
    ObjectiveState,
    Progress,
    RngState,
    Stateful,
    gather,
    model_digest,
    restore,
)
from mixupe.engine.state import improves as _improves
from mixupe.engine.step import (
    NONFINITE_CHECK_EVERY,
    EpochStats,
    FiniteCheck,
    ObjectiveStep,
    next_batch,
    optimizer_step,
)
from mixupe.engine.step import draw_states as _draw_states  # noqa: F401
from mixupe.engine.step import same_draws_closure as _same_draws_closure  # noqa: F401
from mixupe.errors import ConfigError, InputError, NonFiniteLossError

__all__ = [
    "RunResult",
    "build_objective",
    "derive_seed",
    "evaluate",
    "fit_data_mean",
    "model_digest",
    "train",
]

# Looked up in this module at run time, so replacing one here (as the tests do) changes the
# run: _amp_setup, _improves, _train_epoch, build_objective, NONFINITE_CHECK_EVERY.
_amp_setup = amp_setup

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What :func:`train` returns: where the run lives and how it ended."""

    run_dir: Path
    config: TrainConfig
    final: dict[str, Any]  # the last epoch's record; with the full final metrics when complete
    complete: bool
    best: dict[str, Any] | None = None  # best-validation epoch: {"epoch", "val", "test"}


# ---------------------------------------------------------------------- building blocks
def build_model(cfg: TrainConfig, ds: Any) -> nn.Module:
    """The model named by ``cfg.model`` for dataset ``ds``, initialised from ``cfg.seed``."""
    from mixupe import models

    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(derive_seed(cfg.seed, "model"))
        return models.build(cfg.model, input_shape=ds.input_shape, num_classes=ds.num_classes,
                            domain=ds.domain, **dict(cfg.model_options))


def _steps_per_epoch(n_train: int, batch_size: int, ctx: D.DistContext) -> int:
    """Optimiser steps per epoch, equal on every rank (each rank gets ceil(n / world) samples);
    a last batch of one sample is skipped (BatchNorm cannot train on it)."""
    local = math.ceil(n_train / ctx.world_size)
    steps = local // batch_size + (1 if local % batch_size >= 2 else 0)
    return D.all_reduce_min(steps, ctx)


@dataclass
class _Parts:
    ds: Any
    model: nn.Module
    objective: Any
    step_module: nn.Module  # the ObjectiveStep, possibly wrapped in DDP
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: Any
    mix_generator: torch.Generator
    steps_per_epoch: int
    amp_dtype: torch.dtype | None
    augment_fill: torch.Tensor | None = None  # crop_flip's padding value; None: no augment
    best: BestEpoch = field(default_factory=BestEpoch)
    finite: FiniteCheck = field(default_factory=FiniteCheck)


def _build(cfg: TrainConfig, ctx: D.DistContext) -> _Parts:
    from mixupe import data

    ds = data.load(cfg.dataset, seed=cfg.split_seed, **dict(cfg.data_options))
    model = build_model(cfg, ds).to(ctx.device)
    # A CPU generator also on CUDA: the manifold layer index is read on the host, which a
    # CUDA generator would turn into a device synchronisation every step.
    mix_gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "mix", ctx.rank))
    objective = build_objective(cfg, model=model, num_classes=ds.num_classes,
                                domain=ds.domain, generator=mix_gen)
    step_module: nn.Module = ObjectiveStep(model, objective)
    if ctx.distributed:
        step_module = nn.parallel.DistributedDataParallel(
            step_module, device_ids=[ctx.device] if ctx.device.type == "cuda" else None)
    optimizer = build_optimizer(model.parameters(), cfg)
    steps = _steps_per_epoch(len(ds.train), cfg.batch_size, ctx)
    if steps < 1:
        raise ConfigError(
            f"batch_size={cfg.batch_size} leaves no training step: the training split has "
            f"{len(ds.train)} samples over {ctx.world_size} process(es); lower batch_size"
        )
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch=steps)
    amp_dtype, scaler = _amp_setup(cfg, ctx.device)
    return _Parts(ds=ds, model=model, objective=objective, step_module=step_module,
                  optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                  mix_generator=mix_gen, steps_per_epoch=steps, amp_dtype=amp_dtype,
                  augment_fill=_augment_fill(cfg, ds, ctx.device),
                  finite=FiniteCheck(NONFINITE_CHECK_EVERY))


def _augment_fill(cfg: TrainConfig, ds: Any, device: torch.device) -> torch.Tensor | None:
    """The padding value of ``augment="crop-flip"``: a black pixel in the dataset's
    standardised units, ``-mean / std`` per channel (0 without standardisation), on the
    training device once rather than copied every step; None for ``augment="none"``.
    Refuses data that is not a batch of 2-D images."""
    if cfg.augment == "none":
        return None
    x = getattr(ds.train, "x", None)
    if ds.domain != "images" or not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape[1:]) if isinstance(x, torch.Tensor) else type(ds.train).__name__
        raise ConfigError(
            f"augment={cfg.augment!r} crops and flips 2-D images (C, H, W), but dataset "
            f"{cfg.dataset!r} is {ds.domain} data of shape {shape}: set augment='none'.")
    stats = (getattr(ds, "info", None) or {}).get("standardisation")
    if not stats:
        return torch.zeros(x.shape[1], device=device)
    mean = torch.as_tensor(stats["mean"], dtype=torch.float64).reshape(-1)
    std = torch.as_tensor(stats["std"], dtype=torch.float64).reshape(-1)
    return (-mean / std).to(torch.float32).expand(x.shape[1]).to(device)


# ---------------------------------------------------------------------- checkpoints
def _checkpoint_parts(parts: _Parts, ctx: D.DistContext, run: RunDir, *, epoch: int = 0,
                      step: int = 0) -> tuple[Progress, list[Stateful], list[Stateful]]:
    """The run's checkpointed state: the progress, the parts whose keys make up the
    checkpoint, and the per-rank parts gathered into its ``rank_states``."""
    progress = Progress(epoch, step, ctx.world_size, run.cfg.config_hash(), str(run.path))

    def resume_seed() -> int:
        return derive_seed(run.cfg.seed, "global", ctx.rank, "resume", progress.epoch)

    top: list[Stateful] = [
        progress, Entry("model", parts.model), Entry("optimizer", parts.optimizer),
        Entry("scheduler", parts.scheduler), Entry("scaler", parts.scaler, optional=True),
        parts.best,
    ]
    per_rank: list[Stateful] = [
        ObjectiveState(parts.objective, parts.mix_generator), parts.finite,
        RngState(ctx.device, resume_seed=resume_seed, where=run.path), ModelDigest(parts.model),
    ]
    return progress, top, per_rank


def _save(run: RunDir, parts: _Parts, ctx: D.DistContext, *, epoch: int, step: int) -> None:
    _, top, per_rank = _checkpoint_parts(parts, ctx, run, epoch=epoch, step=step)
    ranks = D.all_gather_objects(gather(per_rank), ctx)
    if not ctx.is_main:
        return
    if len({r["model_digest"] for r in ranks}) > 1:
        log.warning("the model differs between ranks after epoch %d (a DDP bug); the "
                    "checkpoint holds rank 0's model", epoch)
    save_checkpoint(run.checkpoint_path, {**gather(top), "rank_states": ranks})


def _restore(ckpt: dict[str, Any], parts: _Parts, ctx: D.DistContext, run: RunDir) -> Progress:
    """Load ``ckpt`` into ``parts`` (this rank's entry of its ``rank_states``)."""
    progress, top, per_rank = _checkpoint_parts(parts, ctx, run)
    restore(top, ckpt)
    restore(per_rank, ckpt["rank_states"][ctx.rank])
    return progress


# ---------------------------------------------------------------------- training
def _train_epoch(cfg: TrainConfig, parts: _Parts, ctx: D.DistContext, *, epoch: int,
                 step: int, bar: Any) -> tuple[dict[str, Any], int]:
    parts.step_module.train()
    shuffle = torch.Generator().manual_seed(derive_seed(cfg.seed, "shuffle", epoch))
    stats = EpochStats(ctx.device)
    batches = train_batches(parts.ds.train, batch_size=cfg.batch_size, shuffle=True,
                            generator=shuffle, device=ctx.device, ctx=ctx)
    set_epoch(parts.objective, epoch)
    # Augmentation draws from its own per-epoch generator: checkpoints fall between epochs,
    # so a resumed run draws what a straight one does.
    augment = None if parts.augment_fill is None else torch.Generator().manual_seed(
        derive_seed(cfg.seed, "augment", epoch, ctx.rank))
    steps = parts.steps_per_epoch
    for i in range(steps):
        x, y = next_batch(batches, i, steps, ctx)
        if augment is not None:
            x = crop_flip(x, padding=4, fill=parts.augment_fill, generator=augment)
        stats.add(optimizer_step(parts, x, y, ctx.device))
        step += 1
        if bar is not None:
            bar.update(1)
        parts.finite.after_step(i, steps, stats, ctx, epoch=epoch, step=step)
    record = stats.record(ctx, steps=steps, finite=parts.finite, epoch=epoch, step=step)
    return record, step


def warn_above_chance(loss: float, num_classes: int, cfg: TrainConfig) -> bool:
    """Log a warning, and return True, when the first epoch's mean training loss is above
    chance level ``log(num_classes)`` (the cross-entropy of uniform predictions, for hard and
    mixed targets alike): the model learnt nothing, usually a learning rate or optimiser
    that does not suit the model."""
    chance = math.log(num_classes)
    if not loss > chance:
        return False
    log.warning("the mean training loss of epoch 1 is %.3f, above chance level log(%d) = %.3f: "
                "the model is not learning; try another optimizer or lr (e.g. --optimizer "
                "adamw --lr 2e-3; now %s at lr %g)", loss, num_classes, chance, cfg.optimizer,
                cfg.lr)
    return True


def train(cfg: TrainConfig, *, runs_root: str | Path = "runs", resume: bool = False,
          overwrite: bool = False, progress: bool = True,
          max_epochs: int | None = None) -> RunResult:
    """Train ``cfg`` in its run directory ``runs_root / cfg.run_name()``.

    ``resume=True`` continues from the checkpoint (or returns a complete run's result);
    ``overwrite=True`` deletes an existing run directory first; without either, an existing
    directory raises :class:`~mixupe.errors.ConfigError`. ``max_epochs`` stops once that many
    epochs (in total) are finished, leaving the run incomplete but resumable. Under
    ``torchrun`` (``WORLD_SIZE > 1``) the process group is started here and only rank 0
    writes files.
    """
    if not isinstance(cfg, TrainConfig):
        raise ConfigError(f"cfg must be a TrainConfig, got {type(cfg).__name__}; "
                          "build one with TrainConfig(...) or TrainConfig.from_dict(...)")
    if max_epochs is not None and (isinstance(max_epochs, bool) or not isinstance(
            max_epochs, int) or max_epochs < 1):
        raise ConfigError(f"max_epochs={max_epochs!r} must be a positive integer or None")
    with deterministic_kernels(cfg.deterministic):
        return _train_on_device(cfg, runs_root=runs_root, resume=resume, overwrite=overwrite,
                                progress=progress, max_epochs=max_epochs)


def _train_on_device(cfg: TrainConfig, *, runs_root: str | Path, resume: bool, overwrite: bool,
                     progress: bool, max_epochs: int | None) -> RunResult:
    """:func:`train` after its checks: the process group, the global generators, the run."""
    ctx = D.setup(cfg.device)
    try:
        devices = [ctx.device] if ctx.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            # The global generators drive only what PyTorch offers no generator for (dropout).
            seed = derive_seed(cfg.seed, "global", ctx.rank)
            torch.default_generator.manual_seed(seed)
            if devices:
                with torch.cuda.device(ctx.device):
                    torch.cuda.manual_seed(seed)
            return _train(cfg, ctx, runs_root=Path(runs_root), resume=resume,
                          overwrite=overwrite, progress=progress, max_epochs=max_epochs)
    finally:
        D.teardown(ctx)


def _eval_kw(cfg: TrainConfig, ctx: D.DistContext) -> dict[str, Any]:
    return {"batch_size": max(cfg.batch_size, 256), "device": ctx.device,
            "ece_bins": cfg.ece_bins, "ctx": ctx}


def _train(cfg: TrainConfig, ctx: D.DistContext, *, runs_root: Path, resume: bool,
           overwrite: bool, progress: bool, max_epochs: int | None) -> RunResult:
    run = RunDir(runs_root, cfg)
    status = D.on_main(ctx, lambda: run.prepare(resume=resume, overwrite=overwrite))
    if status == "complete":
        return _completed(run, ctx)
    parts = _build(cfg, ctx)
    D.on_main(ctx, run.start)  # only now: a run that cannot start leaves no directory
    start_epoch, step = _start(run, parts, ctx, resumed=status == "resume")
    _ensure_data_mean(cfg, parts, ctx)
    stop = min(cfg.epochs, max_epochs or cfg.epochs)
    bar = _progress_bar(cfg, ctx, progress=progress,
                        total=(stop - start_epoch) * parts.steps_per_epoch)
    record: dict[str, Any] = {}
    try:
        for epoch in range(start_epoch + 1, stop + 1):
            record, step = _run_epoch(cfg, parts, ctx, run, epoch=epoch, step=step, bar=bar)
    except (ConfigError, InputError):  # a failed start (e.g. a mixer refusing the inputs)
        if status != "resume":
            D.on_main(ctx, lambda: run.abandon(runs_root))
        raise
    finally:
        if bar is not None:
            bar.close()
    return _finish(run, parts, ctx, record=record, step=step, complete=stop >= cfg.epochs)


def _completed(run: RunDir, ctx: D.DistContext) -> RunResult:
    """The result of a run that finished before (read from its directory)."""
    records, result = D.on_main(ctx, lambda: (run.read_metrics(), run.read_result()))
    final = {**(records[-1] if records else {}),
             **{k: result[k] for k in ("val", "test") if k in result}}
    return RunResult(run.path, run.cfg, final, True, result.get("best"))


def _start(run: RunDir, parts: _Parts, ctx: D.DistContext, *,
           resumed: bool) -> tuple[int, int]:
    """Write the config of a fresh run, or restore a resumed one; the epoch and step reached."""
    cfg = run.cfg
    if not resumed:
        D.on_main(ctx, lambda: run.write_config(environment(ctx, parts.amp_dtype)))
        return 0, 0
    ckpt = D.on_main(ctx, lambda: load_checkpoint(run.checkpoint_path,
                                                  config_hash=cfg.config_hash()))
    progress = _restore(ckpt, parts, ctx, run)
    start_epoch = progress.epoch
    if parts.best.record is None and cfg.full_eval == "each-epoch":  # an older checkpoint
        for rec in D.on_main(ctx, run.read_metrics):
            if rec["epoch"] <= start_epoch and _improves(parts.best.record, rec["val"]):
                parts.best.keep(rec["epoch"], rec["val"], None)
    D.on_main(ctx, lambda: run.keep_metrics_until(start_epoch))
    log.info("resuming %s from epoch %d", run.path, start_epoch)
    return start_epoch, progress.global_step


def _ensure_data_mean(cfg: TrainConfig, parts: _Parts, ctx: D.DistContext) -> None:
    """MixupE versions 1 and 2 mixing inputs need the training data's mean."""
    if (cfg.method == "mixupe" and cfg.version in (1, 2) and parts.ds.domain != "graphs"
            and getattr(parts.objective, "data_mean", None) is None):
        # With an explicit leading 1, so a one-channel image mean (1, H, W) is never mistaken
        # for a batched mean.
        parts.objective.set_data_mean(fit_data_mean(parts.ds.train, ctx=ctx).unsqueeze(0))


def _progress_bar(cfg: TrainConfig, ctx: D.DistContext, *, progress: bool, total: int) -> Any:
    if not (progress and ctx.is_main and total > 0):
        return None
    try:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=cfg.run_name(), leave=False, dynamic_ncols=True)
    except ImportError:  # progress bars are optional
        return None


def _run_epoch(cfg: TrainConfig, parts: _Parts, ctx: D.DistContext, run: RunDir, *,
               epoch: int, step: int, bar: Any) -> tuple[dict[str, Any], int]:
    """Train one epoch, validate (and test), record it, keep the best and checkpoint."""
    t0 = time.perf_counter()
    lr = parts.optimizer.param_groups[0]["lr"]
    try:
        train_stats, step = _train_epoch(cfg, parts, ctx, epoch=epoch, step=step, bar=bar)
    except NonFiniteLossError as exc:
        info = {"failed": True, "reason": str(exc), "epoch": epoch, "last_good_epoch": epoch - 1,
                "checkpoint": run.checkpoint_path.name if epoch > 1 else None}
        D.on_main(ctx, lambda: run.write_failed(info))
        raise
    D.sync_buffers(parts.model, ctx)
    if epoch == 1 and ctx.is_main:
        warn_above_chance(train_stats["loss"], parts.ds.num_classes, cfg)
    t_eval = time.perf_counter()
    # Validation every val_every epochs and at the last (curves, best epoch); test and FGSM
    # only if asked to.
    each_epoch = cfg.full_eval == "each-epoch"
    validate = epoch % cfg.val_every == 0 or epoch == cfg.epochs or each_epoch
    splits = ("val", "test") if each_epoch else ("val",) if validate else ()
    evals = {name: evaluate(parts.model, getattr(parts.ds, name),
                            fgsm_eps=cfg.fgsm_eps if each_epoch else None, **_eval_kw(cfg, ctx))
             for name in splits}
    now = time.perf_counter()
    record = {"epoch": epoch, "lr": lr, "time_s": now - t0, "eval_s": now - t_eval,
              "train": train_stats, **evals}
    if validate and _improves(parts.best.record, evals["val"]):
        parts.best.keep(epoch, evals["val"], None if each_epoch else parts.model)
    D.on_main(ctx, lambda: run.append_metrics(record))
    _save(run, parts, ctx, epoch=epoch, step=step)
    val_acc = evals["val"]["acc"] if validate else math.nan
    if ctx.is_main:
        log.info("epoch %d/%d loss %.4f val acc %.4f", epoch, cfg.epochs, train_stats["loss"],
                 val_acc)
    if bar is not None:
        bar.set_postfix(loss=f"{train_stats['loss']:.3f}", val_acc=f"{val_acc:.3f}")
    return record, step


def _finish(run: RunDir, parts: _Parts, ctx: D.DistContext, *, record: dict[str, Any],
            step: int, complete: bool) -> RunResult:
    """The run's result; a complete run's final (and best-epoch) metrics, in result.json."""
    cfg = run.cfg
    records = D.on_main(ctx, run.read_metrics)
    final = records[-1] if records else record
    if not complete:
        return RunResult(run.path, cfg, final, complete)
    t_eval = time.perf_counter()
    eval_kw = _eval_kw(cfg, ctx)
    full = final_metrics(cfg, parts.model, parts.ds, records, eval_kw)
    best_record = best_metrics(cfg, parts.model, parts.ds, parts.best.record, records, full,
                               eval_kw)
    eval_s = time.perf_counter() - t_eval
    result = {"failed": False, "epochs": cfg.epochs, "run_name": cfg.run_name(),
              "config_hash": cfg.config_hash(), "val": full["val"], "test": full["test"],
              "best": best_record, "train": final.get("train"),
              "wall_time_s": sum(r.get("time_s", 0.0) for r in records) + eval_s,
              "final_eval_s": eval_s, "train_steps": step, "world_size": ctx.world_size}
    D.on_main(ctx, lambda: run.write_result(result))
    return RunResult(run.path, cfg, {**final, **full}, True, best_record)
