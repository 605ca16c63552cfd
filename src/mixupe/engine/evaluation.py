"""Clean evaluation: a split's batches without padding, the metrics of a model, the data mean.

:func:`evaluate` is :func:`evaluate_batches` (the sums over this rank's batches, in eval
mode) all-reduced and turned into metrics; :func:`loss_and_accuracy` is the mean loss and
accuracy of one batch's logits (class indices or soft targets), what
:class:`mixupe.lightning.MixupModule` logs per validation batch; :func:`sum_inputs` is the
float64 input sum behind :func:`fit_data_mean` and the Lightning module's data mean.

>>> logits, y = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])
>>> [round(float(v), 4) for v in loss_and_accuracy(logits, y)]
[0.7201, 0.5]
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from mixupe import functional as MF
from mixupe.engine import distributed as D
from mixupe.engine.metrics import (
    calibration_bins,
    ece_from_bins,
    fgsm_continuous_columns,
    fgsm_perturb,
)
from mixupe.errors import InputError

__all__ = [
    "best_metrics",
    "evaluate",
    "evaluate_batches",
    "final_metrics",
    "fit_data_mean",
    "loss_and_accuracy",
    "sum_inputs",
]

_SUMS = 6  # n, correct, nll, brier, fgsm correct, n attacked


def batches(split: Any, *, batch_size: int, shuffle: bool, generator: torch.Generator | None,
            device: torch.device, ctx: D.DistContext) -> Iterator[tuple[Any, torch.Tensor]]:
    """This rank's batches of ``split`` (``mixupe.data.batches``, last batch kept)."""
    from mixupe import data

    return iter(data.batches(split, batch_size=batch_size, shuffle=shuffle, generator=generator,
                             drop_last=False, device=device, rank=ctx.rank,
                             world_size=ctx.world_size))


def unpadded_batches(split: Any, *, batch_size: int, device: torch.device,
                     ctx: D.DistContext) -> Iterator[tuple[Any, torch.Tensor]]:
    """This rank's shard in order, without the wrap-around padding that evens out the shards.

    ``mixupe.data.batches`` pads the (unshuffled) order with its first samples up to a
    multiple of the world size; the padding is the tail of a rank's stream, so it is cut
    here and every sample counts exactly once over all ranks (for metrics and the data mean).
    """
    left = len(range(ctx.rank, len(split), ctx.world_size))
    for x, y in batches(split, batch_size=batch_size, shuffle=False, generator=None,
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


def sum_inputs(xs: Iterable[Any], *, count_device: torch.device | str = "cpu",
               check: Callable[[Any], None] | None = None) -> tuple[Tensor | None, Tensor]:
    """The float64 sum over the samples of the input batches ``xs`` (None when there are
    none) and their count; ``check`` is called on each batch first."""
    total, count = None, torch.zeros((), dtype=torch.float64, device=count_device)
    for x in xs:
        if check is not None:
            check(x)
        part = x.detach().double().sum(0)
        total = part if total is None else total + part
        count += x.shape[0]
    return total, count


def fit_data_mean(split: Any, *, ctx: D.DistContext, batch_size: int = 1024) -> torch.Tensor:
    """The per-feature mean of a tensor split's inputs (float64, on the CPU).

    Under DDP each rank sums its shard and the sums are all-reduced, so every rank gets the
    mean of the whole split.
    """
    xs = (x for x, _ in unpadded_batches(split, batch_size=batch_size, device=ctx.device,
                                         ctx=ctx))
    total, count = sum_inputs(xs, count_device=ctx.device)
    if total is None:
        raise InputError("the training split is empty; a data mean needs at least one sample")
    D.all_reduce_sum(total, ctx)
    D.all_reduce_sum(count, ctx)
    return (total / count).cpu()


def loss_and_accuracy(logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """The mean cross-entropy and accuracy of ``logits`` (cast to float32) on class indices,
    or on soft targets ``(B, K)`` (accuracy against their argmax)."""
    logits = logits.float()
    if y.is_floating_point():  # soft targets (B, K), e.g. MixCollate's
        loss = MF.soft_cross_entropy(logits, y)
        acc = (logits.argmax(1) == y.argmax(1)).float().mean()
    else:
        loss = torch.nn.functional.cross_entropy(logits, y)
        acc = (logits.argmax(1) == y).float().mean()
    return loss, acc


def _attackable(x: Any) -> bool:
    """Whether FGSM perturbs anything in ``x`` (graph batches: a continuous feature column)."""
    columns = fgsm_continuous_columns(x)
    return columns is None or bool(columns.any())


def _add_batch(sums: Tensor, bins: Tensor, model: nn.Module, x: Any, y: Tensor, *,
               fgsm_eps: float | None) -> None:
    with torch.no_grad():
        logits = model(x).double()
    logp = logits.log_softmax(dim=1)
    onehot = torch.nn.functional.one_hot(y.long(), logits.shape[1]).double()
    correct = (logits.argmax(dim=1) == y).sum()
    sums[0] += y.shape[0]
    sums[1] += correct
    sums[2] -= logp.gather(1, y.long()[:, None]).sum()
    sums[3] += (logp.exp() - onehot).pow(2).sum()
    bins += calibration_bins(logits, y, bins.shape[1])
    if fgsm_eps is None or not _attackable(x):
        return
    sums[5] += y.shape[0]
    if fgsm_eps == 0:  # no perturbation: spare the extra passes
        sums[4] += correct
    else:
        adv = fgsm_perturb(model, x, y, fgsm_eps)
        with torch.no_grad():
            sums[4] += (model(adv).argmax(dim=1) == y).sum()


def evaluate_batches(model: nn.Module, batches: Iterable[tuple[Any, Tensor]], *,
                     device: torch.device, fgsm_eps: float | None = None,
                     ece_bins: int = 15) -> Tensor:
    """The float64 sums of :func:`evaluate` over ``batches`` (not reduced over ranks): the
    count, correct, NLL, Brier, FGSM-correct and attacked counts, then the ``(3, ece_bins)``
    calibration bins, flattened. The model runs in eval mode (its mode is restored)."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(_SUMS, dtype=torch.float64, device=device)
    bins = torch.zeros(3, ece_bins, dtype=torch.float64, device=device)
    try:
        for x, y in batches:
            _add_batch(sums, bins, model, x, y, fgsm_eps=fgsm_eps)
    finally:
        model.train(was_training)
    return torch.cat([sums, bins.flatten()])


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
    local = evaluate_batches(
        model, unpadded_batches(split, batch_size=batch_size, device=dev, ctx=ctx),
        device=dev, fgsm_eps=fgsm_eps, ece_bins=ece_bins)
    flat = D.all_reduce_sum(local, ctx).cpu()
    return _metrics(flat[:_SUMS], flat[_SUMS:].view(3, ece_bins), fgsm_eps=fgsm_eps,
                    reliability=reliability)


def _metrics(sums: Tensor, bins: Tensor, *, fgsm_eps: float | None,
             reliability: bool) -> dict[str, Any]:
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
                      "(one-hot or flags), where an L-inf step defines no input", stacklevel=3)
    if reliability:
        count, conf, correct = bins.tolist()
        out["reliability"] = {
            "count": count,
            "conf": [c / k if k else None for c, k in zip(conf, count, strict=True)],
            "acc": [a / k if k else None for a, k in zip(correct, count, strict=True)],
        }
    return out


# ---------------------------------------------------------------------- a run's final metrics
def final_metrics(cfg: Any, model: nn.Module, ds: Any, records: list[dict[str, Any]],
                  eval_kw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Final-epoch metrics: test with the FGSM attack and reliability bins; validation from
    the last epoch's record (``each-epoch``: both splits evaluated again with everything)."""
    if cfg.full_eval == "each-epoch":
        return {name: evaluate(model, getattr(ds, name), fgsm_eps=cfg.fgsm_eps,
                               reliability=True, **eval_kw) for name in ("val", "test")}
    return {"val": dict(records[-1]["val"]),
            "test": evaluate(model, ds.test, fgsm_eps=cfg.fgsm_eps, reliability=True, **eval_kw)}


def best_metrics(cfg: Any, model: nn.Module, ds: Any, best: dict[str, Any] | None,
                 records: list[dict[str, Any]], final: dict[str, dict[str, Any]],
                 eval_kw: dict[str, Any]) -> dict[str, Any] | None:
    """Metrics of the best-validation epoch: its record (``each-epoch``), the final metrics
    (when it is the last epoch), or the test metrics (no attack) of the model the checkpoint
    kept (``best["model"]``, loaded into a copy of ``model``), with that epoch's validation
    record."""
    if best is None:
        return None
    epoch = best["epoch"]
    rec = next((r for r in records if r["epoch"] == epoch), None)
    if cfg.full_eval == "each-epoch":
        return None if rec is None else {"epoch": epoch, "val": rec["val"], "test": rec["test"]}
    if epoch == cfg.epochs:
        return {"epoch": epoch, "val": final["val"], "test": final["test"]}
    kept = copy.deepcopy(model)
    kept.load_state_dict(best["model"])
    return {"epoch": epoch, "val": rec["val"] if rec is not None else {},
            "test": evaluate(kept, ds.test, fgsm_eps=None, **eval_kw)}
