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

import contextlib
import copy
import hashlib
import logging
import math
import os
import platform
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mixupe.engine import distributed as D
from mixupe.engine.checkpoint import load_checkpoint, save_checkpoint
from mixupe.engine.config import TrainConfig
from mixupe.engine.metrics import (
    calibration_bins,
    ece_from_bins,
    fgsm_continuous_columns,
    fgsm_perturb,
)
from mixupe.engine.objective import build_objective, set_epoch
from mixupe.engine.optim import build_optimizer, build_scheduler
from mixupe.engine.rundir import RunDir
from mixupe.errors import ConfigError, InputError, NonFiniteLossError
from mixupe.sam import SAM

__all__ = [
    "RunResult",
    "build_objective",
    "derive_seed",
    "evaluate",
    "fit_data_mean",
    "model_digest",
    "train",
]

log = logging.getLogger(__name__)

NONFINITE_CHECK_EVERY = 50  # steps between (collective) finiteness checks inside an epoch


@dataclass
class RunResult:
    """What :func:`train` returns: where the run lives and how it ended."""

    run_dir: Path
    config: TrainConfig
    final: dict[str, Any]  # the last epoch's record; with the full final metrics when complete
    complete: bool
    best: dict[str, Any] | None = None  # best-validation epoch: {"epoch", "val", "test"}


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed derived from ``seed`` and a purpose (e.g. ``"mix", rank``).

    >>> derive_seed(0, "mix", 0) != derive_seed(0, "mix", 1)
    True
    """
    text = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


# ---------------------------------------------------------------------- building blocks
def build_model(cfg: TrainConfig, ds: Any) -> nn.Module:
    """The model named by ``cfg.model`` for dataset ``ds``, initialised from ``cfg.seed``."""
    from mixupe import models

    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(derive_seed(cfg.seed, "model"))
        return models.build(cfg.model, input_shape=ds.input_shape, num_classes=ds.num_classes,
                            domain=ds.domain, **dict(cfg.model_options))


class _ObjectiveStep(nn.Module):
    """Runs the whole objective inside one ``forward``.

    Wrapped in DistributedDataParallel, the objective's extra clean pass and (versions 1/2)
    its input-gradient pass then happen inside a single DDP forward, so the gradients of the
    one backward are all-reduced exactly once.
    """

    def __init__(self, model: nn.Module, objective: Any) -> None:
        super().__init__()
        self.model = model
        object.__setattr__(self, "objective", objective)  # not a submodule: no state to sync
        object.__setattr__(self, "last", None)

    def forward(self, x: Any, y: torch.Tensor) -> torch.Tensor:
        out = self.objective(self.model, x, y)
        object.__setattr__(self, "last", out)
        return out.loss


def _batches(split: Any, *, batch_size: int, shuffle: bool, generator: torch.Generator | None,
             device: torch.device, ctx: D.DistContext) -> Iterator[tuple[Any, torch.Tensor]]:
    from mixupe import data

    return iter(data.batches(split, batch_size=batch_size, shuffle=shuffle, generator=generator,
                             drop_last=False, device=device, rank=ctx.rank,
                             world_size=ctx.world_size))


def _unpadded_batches(split: Any, *, batch_size: int, device: torch.device,
                      ctx: D.DistContext) -> Iterator[tuple[Any, torch.Tensor]]:
    """This rank's shard in order, without the wrap-around padding that evens out the shards.

    ``mixupe.data.batches`` pads the (unshuffled) order with its first samples up to a
    multiple of the world size; the padding is the tail of a rank's stream, so it is cut
    here and every sample counts exactly once over all ranks (for metrics and the data mean).
    """
    left = len(range(ctx.rank, len(split), ctx.world_size))
    for x, y in _batches(split, batch_size=batch_size, shuffle=False, generator=None,
                         device=device, ctx=ctx):
        if left <= 0:
            return
        if y.shape[0] > left:
            x, y = _take_first(x, left), y[:left]
        left -= y.shape[0]
        yield x, y


def _take_first(x: Any, k: int) -> Any:
    if isinstance(x, torch.Tensor):
        return x[:k]
    from torch_geometric.data import Batch  # graph batches come from PyG

    return Batch.from_data_list(x.to_data_list()[:k])


def _steps_per_epoch(n_train: int, batch_size: int, ctx: D.DistContext) -> int:
    """Optimiser steps per epoch, equal on every rank (each rank gets ceil(n / world) samples);
    a last batch of one sample is skipped (BatchNorm cannot train on it)."""
    local = math.ceil(n_train / ctx.world_size)
    steps = local // batch_size + (1 if local % batch_size >= 2 else 0)
    return D.all_reduce_min(steps, ctx)


def fit_data_mean(split: Any, *, ctx: D.DistContext, batch_size: int = 1024) -> torch.Tensor:
    """The per-feature mean of a tensor split's inputs (float64, on the CPU).

    Under DDP each rank sums its shard and the sums are all-reduced, so every rank gets the
    mean of the whole split.
    """
    total, count = None, torch.zeros((), dtype=torch.float64, device=ctx.device)
    for x, _ in _unpadded_batches(split, batch_size=batch_size, device=ctx.device, ctx=ctx):
        part = x.detach().double().sum(0)
        total = part if total is None else total + part
        count += x.shape[0]
    if total is None:
        raise InputError("the training split is empty; a data mean needs at least one sample")
    D.all_reduce_sum(total, ctx)
    D.all_reduce_sum(count, ctx)
    return (total / count).cpu()


# ---------------------------------------------------------------------- evaluation
def _attackable(x: Any) -> bool:
    """Whether FGSM perturbs anything in ``x`` (graph batches: a continuous feature column)."""
    columns = fgsm_continuous_columns(x)
    return columns is None or bool(columns.any())


def evaluate(model: nn.Module, split: Any, *, batch_size: int = 512,
             device: str | torch.device = "cpu", fgsm_eps: float | None = 0.03,
             ece_bins: int = 15, reliability: bool = False,
             ctx: D.DistContext | None = None) -> dict[str, Any]:
    """Clean accuracy, NLL, Brier score, ECE and FGSM accuracy of ``model`` on ``split``.

    ``fgsm_eps=None`` skips the attack (two more passes over the split, the bulk of the cost)
    and leaves ``fgsm_acc`` out; graph batches whose node features are all 0/1 (one-hot,
    flags: the molecule features) are not attacked, and ``fgsm_acc`` is over the attacked
    samples, or left out with a warning where there are none; ``reliability=True`` adds the
    per-bin data of a reliability diagram (``count``, mean ``conf`` and ``acc`` per ECE bin;
    ``None`` for empty bins), from the same pass. The model runs in eval mode (its previous
    mode is restored). Under DDP pass ``ctx``: each rank evaluates its shard and the sums are
    all-reduced, so every rank gets the same numbers.

    >>> from mixupe.data import TensorSplit
    >>> g = torch.Generator().manual_seed(0)
    >>> split = TensorSplit(torch.randn(20, 4, generator=g), torch.arange(20) % 3)
    >>> sorted(evaluate(torch.nn.Linear(4, 3), split, fgsm_eps=0.1))
    ['acc', 'brier', 'ece', 'fgsm_acc', 'nll']
    >>> sorted(evaluate(torch.nn.Linear(4, 3), split, fgsm_eps=None, reliability=True))
    ['acc', 'brier', 'ece', 'nll', 'reliability']
    """
    ctx = ctx or D.DistContext(0, 1, 0, torch.device(device), owns_group=False)
    dev = torch.device(device)
    was_training = model.training
    model.eval()
    sums = torch.zeros(6, dtype=torch.float64, device=dev)  # n, correct, nll, brier, fgsm, n att.
    bins = torch.zeros(3, ece_bins, dtype=torch.float64, device=dev)
    try:
        for x, y in _unpadded_batches(split, batch_size=batch_size, device=dev, ctx=ctx):
            with torch.no_grad():
                logits = model(x).double()
            logp = logits.log_softmax(dim=1)
            onehot = torch.nn.functional.one_hot(y.long(), logits.shape[1]).double()
            correct = (logits.argmax(dim=1) == y).sum()
            sums[0] += y.shape[0]
            sums[1] += correct
            sums[2] -= logp.gather(1, y.long()[:, None]).sum()
            sums[3] += (logp.exp() - onehot).pow(2).sum()
            bins += calibration_bins(logits, y, ece_bins)
            if fgsm_eps is None or not _attackable(x):
                continue
            sums[5] += y.shape[0]
            if fgsm_eps == 0:  # no perturbation: spare the extra passes
                sums[4] += correct
            else:
                adv = fgsm_perturb(model, x, y, fgsm_eps)
                with torch.no_grad():
                    sums[4] += (model(adv).argmax(dim=1) == y).sum()
    finally:
        model.train(was_training)
    flat = D.all_reduce_sum(torch.cat([sums, bins.flatten()]), ctx).cpu()
    sums, bins = flat[:6], flat[6:].view(3, ece_bins)
    n = sums[0].item()
    if n == 0:
        raise InputError("evaluate got an empty split; pass a split with at least one sample")
    out: dict[str, Any] = {
        "acc": sums[1].item() / n,
        "nll": sums[2].item() / n,
        "brier": sums[3].item() / n,
        "ece": ece_from_bins(bins),
    }
    if fgsm_eps is not None and sums[5].item() > 0:
        out["fgsm_acc"] = sums[4].item() / sums[5].item()
    elif fgsm_eps is not None:
        warnings.warn("FGSM accuracy is not reported: every graph's node features are 0/1 "
                      "(one-hot or flags), where an L-inf step defines no input", stacklevel=2)
    if reliability:
        count, conf, correct = bins.tolist()
        out["reliability"] = {
            "count": count,
            "conf": [c / k if k else None for c, k in zip(conf, count, strict=True)],
            "acc": [a / k if k else None for a, k in zip(correct, count, strict=True)],
        }
    return out


# ---------------------------------------------------------------------- training
def _improves(best: dict[str, Any] | None, val: dict[str, Any]) -> bool:
    """Whether this epoch's validation accuracy beats the best so far (ties keep the earlier)."""
    return best is None or val["acc"] > best["val_acc"]


def _best_of(epoch: int, val: dict[str, Any], model: nn.Module | None) -> dict[str, Any]:
    """The best-validation record: its epoch, accuracy and (``full_eval="end"``) the model."""
    state = None
    if model is not None:
        state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    return {"epoch": epoch, "val_acc": val["acc"], "model": state}


@dataclass
class _Parts:
    ds: Any
    model: nn.Module
    objective: Any
    step_module: nn.Module  # the _ObjectiveStep, possibly wrapped in DDP
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: Any
    mix_generator: torch.Generator
    steps_per_epoch: int
    amp_dtype: torch.dtype | None


def _on_main(ctx: D.DistContext, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on rank 0 only; every rank gets its value, or raises its exception."""
    value, error = None, None
    if ctx.is_main:
        try:
            value = fn()
        except Exception as exc:
            if not ctx.distributed:
                raise
            error = exc
    value, error = D.broadcast_object((value, error), ctx)
    if error is not None:
        raise error
    return value


def _environment(ctx: D.DistContext, amp_dtype: torch.dtype | None) -> dict[str, Any]:
    import mixupe

    return {
        "torch": torch.__version__, "mixupe": mixupe.__version__,
        "python": platform.python_version(), "host": socket.gethostname(),
        "device": str(ctx.device), "world_size": ctx.world_size,
        "amp_dtype": str(amp_dtype) if amp_dtype else None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _build(cfg: TrainConfig, ctx: D.DistContext) -> _Parts:
    from mixupe import data

    ds = data.load(cfg.dataset, seed=cfg.split_seed, **dict(cfg.data_options))
    model = build_model(cfg, ds).to(ctx.device)
    # A CPU generator also on CUDA: the manifold layer index is read on the host, which a
    # CUDA generator would turn into a device synchronisation every step.
    mix_gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "mix", ctx.rank))
    objective = build_objective(cfg, model=model, num_classes=ds.num_classes,
                                domain=ds.domain, generator=mix_gen)
    step_module: nn.Module = _ObjectiveStep(model, objective)
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
    return _Parts(ds, model, objective, step_module, optimizer, scheduler, scaler, mix_gen,
                  steps, amp_dtype)


def _amp_setup(cfg: TrainConfig, device: torch.device) -> tuple[torch.dtype | None, Any]:
    """The autocast dtype of ``cfg.amp``/``cfg.amp_dtype`` on ``device`` and, for float16,
    the gradient scaler (its state is checkpointed); ``(None, None)`` without amp."""
    if not cfg.amp:
        return None, None
    if device.type != "cuda":
        raise ConfigError(
            f"amp=True needs a CUDA device but the run is on {device}; "
            "drop --amp or use device='cuda'"
        )
    bf16 = torch.cuda.is_bf16_supported()
    if cfg.amp_dtype == "bf16" and not bf16:
        raise ConfigError(
            f"amp_dtype='bf16' but {device} ({torch.cuda.get_device_name(device)}) does not "
            "support bfloat16; use --amp-dtype fp16 or auto"
        )
    if cfg.amp_dtype == "bf16" or (cfg.amp_dtype == "auto" and bf16):
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler(device.type)


CUBLAS_ENV = "CUBLAS_WORKSPACE_CONFIG"
_CUBLAS_DETERMINISTIC = (":4096:8", ":16:8")


@contextlib.contextmanager
def deterministic_kernels(enabled: bool) -> Iterator[None]:
    """With ``enabled``, PyTorch's deterministic algorithms (an op without one raises), cuDNN's
    deterministic mode without benchmarking, and cuBLAS's fixed workspace
    (``CUBLAS_WORKSPACE_CONFIG=:4096:8`` unless set to ``:16:8``); all restored afterwards.

    cuBLAS reads its workspace setting when a process first uses it: set the variable in
    the environment before then if the process used CUDA matrix products before training.
    """
    if not enabled:
        yield
        return
    workspace = os.environ.get(CUBLAS_ENV)
    if workspace not in (None, "", *_CUBLAS_DETERMINISTIC):
        raise ConfigError(
            f"deterministic=True needs {CUBLAS_ENV} unset or one of {_CUBLAS_DETERMINISTIC}, "
            f"but it is {workspace!r}; unset it or export {CUBLAS_ENV}=:4096:8"
        )
    cudnn = torch.backends.cudnn
    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             cudnn.deterministic, cudnn.benchmark)
    os.environ[CUBLAS_ENV] = workspace or _CUBLAS_DETERMINISTIC[0]
    torch.use_deterministic_algorithms(True)
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        cudnn.deterministic, cudnn.benchmark = saved[2], saved[3]
        if workspace is None:
            os.environ.pop(CUBLAS_ENV, None)


def model_digest(model: nn.Module) -> str:
    """A SHA-256 of every parameter and buffer's bytes: equal digests mean identical models."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().reshape(-1).contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _rank_state(parts: _Parts, ctx: D.DistContext) -> dict[str, Any]:
    state = {"mix_generator": parts.mix_generator.get_state(),
             "cpu_rng": torch.get_rng_state(), "model_digest": model_digest(parts.model)}
    objective_state = getattr(parts.objective, "state_dict", None)
    if callable(objective_state):  # MixupE: data mean, representation means, generator
        state["objective"] = objective_state()
    if ctx.device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(ctx.device)
    return state


def _save(run: RunDir, parts: _Parts, ctx: D.DistContext, *, epoch: int, step: int,
          best: dict[str, Any] | None) -> None:
    ranks = D.all_gather_objects(_rank_state(parts, ctx), ctx)
    if not ctx.is_main:
        return
    if len({r["model_digest"] for r in ranks}) > 1:
        log.warning("the model differs between ranks after epoch %d (a DDP bug); the "
                    "checkpoint holds rank 0's model", epoch)
    save_checkpoint(run.checkpoint_path, {
        "epoch": epoch, "global_step": step,
        "world_size": ctx.world_size, "config_hash": run.cfg.config_hash(),
        "model": parts.model.state_dict(), "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "scaler": parts.scaler.state_dict() if parts.scaler is not None else None,
        "rank_states": ranks, "best": best,
    })


def _restore(ckpt: dict[str, Any], parts: _Parts, ctx: D.DistContext, run: RunDir) -> None:
    if ckpt.get("world_size") != ctx.world_size:
        raise ConfigError(
            f"checkpoint in {run.path} was written by {ckpt.get('world_size')} process(es) but "
            f"this run has {ctx.world_size}; resume with the same number of processes or "
            "pass --overwrite"
        )
    parts.model.load_state_dict(ckpt["model"])
    parts.optimizer.load_state_dict(ckpt["optimizer"])
    parts.scheduler.load_state_dict(ckpt["scheduler"])
    if parts.scaler is not None and ckpt.get("scaler") is not None:
        parts.scaler.load_state_dict(ckpt["scaler"])
    state = ckpt["rank_states"][ctx.rank]
    if "objective" in state:
        parts.objective.load_state_dict(state["objective"])
    parts.mix_generator.set_state(state["mix_generator"])
    torch.set_rng_state(state["cpu_rng"])
    if ctx.device.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state(state["cuda_rng"], ctx.device)
    elif ctx.device.type == "cuda" or "cuda_rng" in state:
        # Written on another kind of device: the CUDA random state (dropout on the GPU) cannot
        # continue, so it restarts from a seed of its own for this epoch.
        log.warning("checkpoint in %s was written on %s and resumes on %s: the run continues, "
                    "but not bit-identically to one that never changed device", run.path,
                    "CUDA" if "cuda_rng" in state else "the CPU", ctx.device)
        if ctx.device.type == "cuda":
            with torch.cuda.device(ctx.device):
                torch.cuda.manual_seed(derive_seed(run.cfg.seed, "global", ctx.rank,
                                                   "resume", ckpt["epoch"]))


def _stat(out: Any, *names: str) -> torch.Tensor | None:
    """A detached statistic tensor of an objective output, without a device sync."""
    stats = getattr(out, "stat_tensors", None) or {}
    for name in names:
        value = stats.get(name)
        if isinstance(value, torch.Tensor):
            return value.detach().double().reshape(())
    return None


def _draw_states(parts: _Parts, device: torch.device) -> tuple[Any, ...]:
    """The states a SAM step's second evaluation restores: the mixing generator, the CPU RNG
    and, on CUDA, the device's RNG (dropout draws from it there)."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return parts.mix_generator.get_state(), torch.get_rng_state(), cuda


def _same_draws_closure(parts: _Parts, x: Any, y: torch.Tensor,
                        draws: tuple[Any, ...], device: torch.device
                        ) -> Callable[[], torch.Tensor]:
    """SAM's second evaluation, at the perturbed weights, with the step's own random draws
    (mixing generator, CPU RNG and the device's RNG restored, so lambda, pairing, masks and
    dropout repeat)."""

    def closure() -> torch.Tensor:
        parts.mix_generator.set_state(draws[0])
        torch.set_rng_state(draws[1])
        if draws[2] is not None:
            torch.cuda.set_rng_state(draws[2], device)
        parts.optimizer.zero_grad(set_to_none=True)
        loss = parts.step_module(x, y)
        loss.backward()
        return loss

    return closure


def _train_epoch(cfg: TrainConfig, parts: _Parts, ctx: D.DistContext, *, epoch: int,
                 step: int, bar: Any) -> tuple[dict[str, Any], int]:
    inner = parts.step_module.module if ctx.distributed else parts.step_module
    parts.step_module.train()
    shuffle = torch.Generator().manual_seed(derive_seed(cfg.seed, "shuffle", epoch))
    dev = ctx.device
    # loss, mixup loss, reg, reg ratio, selected fraction, the count of steps with those
    # stats, then the rescale factor's sum and sum of squares (MixupE with rescale)
    acc = torch.zeros(8, dtype=torch.float64, device=dev)
    batches = _batches(parts.ds.train, batch_size=cfg.batch_size, shuffle=True,
                       generator=shuffle, device=dev, ctx=ctx)
    set_epoch(parts.objective, epoch)
    for i in range(parts.steps_per_epoch):
        try:
            x, y = next(batches)
        except StopIteration:
            raise InputError(
                f"the training batches of rank {ctx.rank} ran out after {i} of "
                f"{parts.steps_per_epoch} steps; the data shards are uneven, report this bug"
            ) from None
        parts.optimizer.zero_grad(set_to_none=True)
        draws = _draw_states(parts, dev)
        with (torch.autocast(dev.type, dtype=parts.amp_dtype) if parts.amp_dtype
              else contextlib.nullcontext()):
            loss = parts.step_module(x, y)
        out = inner.last
        if parts.scaler is not None:
            parts.scaler.scale(loss).backward()
            parts.scaler.step(parts.optimizer)
            parts.scaler.update()
        else:
            loss.backward()
            if isinstance(parts.optimizer, SAM):
                parts.optimizer.step(_same_draws_closure(parts, x, y, draws, dev))
            else:
                parts.optimizer.step()
        parts.scheduler.step()
        step += 1
        detached = loss.detach().double()
        acc[0] += detached
        mix = _stat(out, "mixup_loss")
        reg = _stat(out, "regulariser")
        if mix is not None and reg is not None:  # MixupE
            acc[1] += mix
            acc[2] += reg
            ratio = _stat(out, "regulariser_ratio")
            acc[3] += ratio if ratio is not None else reg.abs() / mix.abs().clamp_min(1e-300)
            sel = _stat(out, "selected_fraction")
            acc[4] += sel if sel is not None else 1.0
            acc[5] += 1
            scale = _stat(out, "rescale")
            if scale is not None:
                acc[6] += scale
                acc[7] += scale * scale
        else:
            acc[1] += detached
        if bar is not None:
            bar.update(1)
        if (i + 1) % NONFINITE_CHECK_EVERY == 0 and i + 1 < parts.steps_per_epoch:
            _check_finite(acc[0].clone(), ctx, epoch=epoch, step=step)
    totals = D.all_reduce_sum(acc, ctx).cpu()
    _check_finite(totals[0], ctx, epoch=epoch, step=step, reduced=True)
    n = parts.steps_per_epoch * ctx.world_size
    record: dict[str, Any] = {"loss": totals[0].item() / n, "mixup_loss": totals[1].item() / n,
                              "reg": 0.0, "reg_ratio": 0.0, "selected_frac": None}
    if totals[5].item() > 0:
        k = max(totals[5].item(), 1.0)
        record.update(reg=totals[2].item() / k, reg_ratio=totals[3].item() / k,
                      selected_frac=totals[4].item() / k)
        if totals[6].item() > 0:  # the rescale factor |L_mix| / |L| over the epoch's steps
            mean = totals[6].item() / k
            record.update(rescale=mean,
                          rescale_sd=math.sqrt(max(totals[7].item() / k - mean * mean, 0.0)))
    return record, step


def _sync_buffers(model: nn.Module, ctx: D.DistContext) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics).

    DDP broadcasts them at the start of each forward, so after the last step of an epoch the
    other ranks still hold statistics of their own last batch; evaluation and the checkpoint
    need one model.
    """
    if ctx.distributed:
        for buf in model.buffers():
            D.broadcast_tensor(buf, ctx)


def _check_finite(total: torch.Tensor, ctx: D.DistContext, *, epoch: int, step: int,
                  reduced: bool = False) -> None:
    if not reduced:
        total = D.all_reduce_sum(total, ctx)
    if not bool(torch.isfinite(total).item()):
        raise NonFiniteLossError(
            f"the training loss became non-finite ({total.item()}) in epoch {epoch} by step "
            f"{step}; lower lr, raise warmup_epochs or check the data; the checkpoint of the "
            "last finished epoch is kept"
        )


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


def _final_metrics(cfg: TrainConfig, parts: _Parts, records: list[dict[str, Any]],
                   eval_kw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Final-epoch metrics: test with the FGSM attack and reliability bins; validation from
    the last epoch's record (``each-epoch``: both splits evaluated again with everything)."""
    if cfg.full_eval == "each-epoch":
        return {name: evaluate(parts.model, getattr(parts.ds, name), fgsm_eps=cfg.fgsm_eps,
                               reliability=True, **eval_kw) for name in ("val", "test")}
    return {"val": dict(records[-1]["val"]),
            "test": evaluate(parts.model, parts.ds.test, fgsm_eps=cfg.fgsm_eps,
                             reliability=True, **eval_kw)}


def _best_result(cfg: TrainConfig, parts: _Parts, best: dict[str, Any] | None,
                 records: list[dict[str, Any]], final: dict[str, dict[str, Any]],
                 eval_kw: dict[str, Any]) -> dict[str, Any] | None:
    """Metrics of the best-validation epoch: its record (``each-epoch``), the final metrics
    (when it is the last epoch), or the test metrics (no attack) of the model the checkpoint
    kept, with that epoch's validation record."""
    if best is None:
        return None
    epoch = best["epoch"]
    rec = next((r for r in records if r["epoch"] == epoch), None)
    if cfg.full_eval == "each-epoch":
        return None if rec is None else {"epoch": epoch, "val": rec["val"], "test": rec["test"]}
    if epoch == cfg.epochs:
        return {"epoch": epoch, "val": final["val"], "test": final["test"]}
    model = copy.deepcopy(parts.model)
    model.load_state_dict(best["model"])
    return {"epoch": epoch, "val": rec["val"] if rec is not None else {},
            "test": evaluate(model, parts.ds.test, fgsm_eps=None, **eval_kw)}


def _train(cfg: TrainConfig, ctx: D.DistContext, *, runs_root: Path, resume: bool,
           overwrite: bool, progress: bool, max_epochs: int | None) -> RunResult:
    run = RunDir(runs_root, cfg)
    status = _on_main(ctx, lambda: run.prepare(resume=resume, overwrite=overwrite))
    if status == "complete":
        records, result = _on_main(ctx, lambda: (run.read_metrics(), run.read_result()))
        final = {**(records[-1] if records else {}),
                 **{k: result[k] for k in ("val", "test") if k in result}}
        return RunResult(run.path, cfg, final, True, result.get("best"))

    parts = _build(cfg, ctx)
    _on_main(ctx, run.start)  # only now: a run that cannot start leaves no directory
    start_epoch, step = 0, 0
    best: dict[str, Any] | None = None
    if status == "resume":
        ckpt = _on_main(ctx, lambda: load_checkpoint(run.checkpoint_path,
                                                     config_hash=cfg.config_hash()))
        _restore(ckpt, parts, ctx, run)
        start_epoch, step = ckpt["epoch"], ckpt["global_step"]
        best = ckpt.get("best")
        if best is None and cfg.full_eval == "each-epoch":  # a checkpoint of an older version
            for rec in _on_main(ctx, run.read_metrics):
                if rec["epoch"] <= start_epoch and _improves(best, rec["val"]):
                    best = _best_of(rec["epoch"], rec["val"], None)
        _on_main(ctx, lambda: run.keep_metrics_until(start_epoch))
        log.info("resuming %s from epoch %d", run.path, start_epoch)
    else:
        _on_main(ctx, lambda: run.write_config(_environment(ctx, parts.amp_dtype)))
    if (cfg.method == "mixupe" and cfg.version in (1, 2) and parts.ds.domain != "graphs"
            and getattr(parts.objective, "data_mean", None) is None):
        # With an explicit leading 1, so a one-channel image mean (1, H, W) is never mistaken
        # for a batched mean.
        parts.objective.set_data_mean(fit_data_mean(parts.ds.train, ctx=ctx).unsqueeze(0))

    stop = min(cfg.epochs, max_epochs or cfg.epochs)
    bar = None
    if progress and ctx.is_main and stop > start_epoch:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=(stop - start_epoch) * parts.steps_per_epoch,
                       desc=cfg.run_name(), leave=False, dynamic_ncols=True)
        except ImportError:  # progress bars are optional
            bar = None
    each_epoch = cfg.full_eval == "each-epoch"
    eval_kw = {"batch_size": max(cfg.batch_size, 256), "device": ctx.device,
               "ece_bins": cfg.ece_bins, "ctx": ctx}
    record: dict[str, Any] = {}
    try:
        for epoch in range(start_epoch + 1, stop + 1):
            t0 = time.perf_counter()
            lr = parts.optimizer.param_groups[0]["lr"]
            try:
                train_stats, step = _train_epoch(cfg, parts, ctx, epoch=epoch, step=step, bar=bar)
            except NonFiniteLossError as exc:
                info = {"failed": True, "reason": str(exc), "epoch": epoch,
                        "last_good_epoch": epoch - 1,
                        "checkpoint": run.checkpoint_path.name if epoch > 1 else None}
                _on_main(ctx, lambda info=info: run.write_failed(info))
                raise
            _sync_buffers(parts.model, ctx)
            if epoch == 1 and ctx.is_main:
                warn_above_chance(train_stats["loss"], parts.ds.num_classes, cfg)
            t_eval = time.perf_counter()
            # Validation every val_every epochs and at the last (curves, best epoch); test and
            # FGSM only if asked to.
            validate = epoch % cfg.val_every == 0 or epoch == cfg.epochs or each_epoch
            splits = ("val", "test") if each_epoch else ("val",) if validate else ()
            evals = {name: evaluate(parts.model, getattr(parts.ds, name),
                                    fgsm_eps=cfg.fgsm_eps if each_epoch else None, **eval_kw)
                     for name in splits}
            now = time.perf_counter()
            record = {"epoch": epoch, "lr": lr, "time_s": now - t0, "eval_s": now - t_eval,
                      "train": train_stats, **evals}
            if validate and _improves(best, evals["val"]):
                best = _best_of(epoch, evals["val"], None if each_epoch else parts.model)
            _on_main(ctx, lambda record=record: run.append_metrics(record))
            _save(run, parts, ctx, epoch=epoch, step=step, best=best)
            val_acc = evals["val"]["acc"] if validate else math.nan
            if ctx.is_main:
                log.info("epoch %d/%d loss %.4f val acc %.4f", epoch, cfg.epochs,
                         train_stats["loss"], val_acc)
            if bar is not None:
                bar.set_postfix(loss=f"{train_stats['loss']:.3f}", val_acc=f"{val_acc:.3f}")
    except (ConfigError, InputError):  # a failed start (e.g. a mixer refusing the inputs)
        if status != "resume":
            _on_main(ctx, lambda: run.abandon(runs_root))
        raise
    finally:
        if bar is not None:
            bar.close()

    records = _on_main(ctx, run.read_metrics)
    final = records[-1] if records else record
    complete = stop >= cfg.epochs
    if complete:
        t_eval = time.perf_counter()
        full = _final_metrics(cfg, parts, records, eval_kw)
        best_record = _best_result(cfg, parts, best, records, full, eval_kw)
        eval_s = time.perf_counter() - t_eval
        result = {"failed": False, "epochs": cfg.epochs, "run_name": cfg.run_name(),
                  "config_hash": cfg.config_hash(), "val": full["val"], "test": full["test"],
                  "best": best_record, "train": final.get("train"),
                  "wall_time_s": sum(r.get("time_s", 0.0) for r in records) + eval_s,
                  "final_eval_s": eval_s, "train_steps": step, "world_size": ctx.world_size}
        _on_main(ctx, lambda: run.write_result(result))
        return RunResult(run.path, cfg, {**final, **full}, True, best_record)
    return RunResult(run.path, cfg, final, complete)
