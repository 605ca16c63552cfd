"""PyTorch Lightning integration: any mixupe objective as a ``LightningModule``'s training step.

Needs the optional extra ``pytorch-lightning`` (``pip install "mixupe[lightning]"``).

:class:`MixupModule` wraps a model and an objective (``ERM``, ``Mixup``, ``CutMix``,
``ManifoldMixup`` or ``MixupE``):

- ``training_step`` returns the objective's loss on the batch. Under DDP the whole objective
  (mixed pass, MixupE's clean pass and its input-gradient pass) runs inside the one DDP forward
  of ``training_step``, so the backward all-reduces the gradients exactly once.
- The objective's stats (``loss``, ``lam``; for MixupE also ``mixup_loss``, ``regulariser``,
  ``regulariser_ratio``, ``selected_fraction``, ...) are logged as ``train/NAME``, averaged per
  epoch over steps and devices (no per-step synchronisation).
- Nothing is logged per step (a per-step progress-bar value would read the loss back to the
  host every step).
- Validation and test steps evaluate the clean model: ``val/loss``, ``val/acc`` (and ``test/``),
  on class indices or soft targets ``(B, K)`` (accuracy against their argmax).
- At each epoch start every schedule inside the objective (``Scheduled``, also inside MixupE,
  RegMixup or ``Switch``) is told the epoch (from 1), and a shuffling ``RandomSampler`` gets a
  generator seeded from the objective's seed and the epoch, so the epoch's order is the same in
  a resumed run (resume is exact from a checkpoint at an epoch boundary; Lightning restarts a
  mid-epoch checkpoint's epoch, so that one is not).
- An optimizer factory may return :class:`mixupe.SAM`: the objective's generator is added to
  the draws it replays, so its pass at ``w + e`` uses the same lambda, pairing and dropout
  masks; that pass is not logged.
- MixupE versions 1 and 2 with input mixing need the data mean: at the start of training it is
  fitted in one pass over the training loader (float64 sums over this device's shard,
  all-reduced across devices, so every device holds the mean of the whole training stream), unless
  the objective already has one (``set_data_mean``, or restored from a checkpoint). With a
  shuffling loader this pass draws one epoch's order from the loader's generator.
- Under DDP each device's objective generator is re-seeded from its initial seed and the device's
  global rank, so devices draw different lambdas and pairings, reproducibly.
- The objective's state (generator, MixupE's data mean and representation means) is saved in
  Lightning checkpoints under ``"mixupe_objective"``, one entry per device, and restored on
  resume (``Trainer.fit(..., ckpt_path=...)``).

Example (not run as a doctest: it trains):

.. code-block:: python

    import pytorch_lightning as pl, torch, mixupe
    from mixupe.lightning import MixupModule

    net = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 26))
    objective = mixupe.MixupE(version=1, eta=0.1, mixing=mixupe.Mixup(alpha=1.0, num_classes=26))
    module = MixupModule(net, objective,
                         optimizer=lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9))
    pl.Trainer(max_epochs=10, accelerator="cpu", devices=2, strategy="ddp").fit(
        module, train_loader, val_loader)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from mixupe.engine.evaluation import loss_and_accuracy, sum_inputs
from mixupe.engine.objective import set_epoch
from mixupe.engine.state import load_objective_state, objective_state
from mixupe.engine.step import split_batch, training_step
from mixupe.errors import DataUnavailableError, InputError
from mixupe.objectives import ManifoldMixup, MixupE, Objective
from mixupe.sam import SAM

try:
    import pytorch_lightning as pl
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise DataUnavailableError(
        "mixupe.lightning needs PyTorch Lightning; install it with "
        "`pip install pytorch-lightning` (keep your torch: add --no-deps if it would replace it)"
    ) from exc

__all__ = ["CHECKPOINT_KEY", "MixupModule", "set_epoch", "split_batch"]

CHECKPOINT_KEY = "mixupe_objective"
Optimizers = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


def _shuffle_seed(base: int, epoch: int) -> int:
    return (base * 1_000_003 + 7919 * (epoch + 1)) % (1 << 63)


class MixupModule(pl.LightningModule):
    """A ``LightningModule`` whose training step is a mixupe objective; see the module docstring.

    Args:
        model: any ``nn.Module`` returning logits ``(B, K)``.
        objective: a mixupe objective (``objective(model, x, y)`` returns its loss and stats).
        optimizer: builds the optimiser from the model's parameters; default
            ``torch.optim.AdamW(params, lr=1e-3)``.
        reseed_per_rank: under DDP, re-seed each device's objective generator from its rank.
    """

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        *,
        optimizer: Optimizers | None = None,
        reseed_per_rank: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(objective, Objective):
            raise InputError(
                f"objective={objective!r} is not a mixupe objective: pass ERM(...), Mixup(...), "
                "CutMix(...), ManifoldMixup(...) or MixupE(...)"
            )
        self.model = model
        self.objective = objective
        self.optimizer_factory = optimizer
        self.reseed_per_rank = bool(reseed_per_rank)
        self.shuffle_seed = int(objective.generator.initial_seed())

    # ----------------------------------------------------------------- steps
    def forward(self, x: Any) -> Tensor:
        return self.model(x)

    def _sam(self) -> SAM | None:
        optimizers = self.trainer.optimizers if self._trainer is not None else []
        return next((o for o in optimizers if isinstance(o, SAM)), None)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        result = training_step(self.objective, self.model, batch)
        sam = self._sam()
        if sam is None or not sam.second_pass:  # SAM's pass at w + e is not logged
            stats = {f"train/{k}": v for k, v in result.stat_tensors.items()}
            # epoch means only: a per-step progress-bar value would sync every step
            self.log_dict(stats, on_step=False, on_epoch=True, sync_dist=True,
                          batch_size=result.batch_size)
        return result.loss

    def _evaluate(self, batch: Any, prefix: str) -> None:
        x, y = split_batch(batch)
        loss, acc = loss_and_accuracy(self.model(x), y)
        self.log_dict({f"{prefix}/loss": loss, f"{prefix}/acc": acc}, on_step=False,
                      on_epoch=True, sync_dist=True, prog_bar=prefix == "val",
                      batch_size=int(y.shape[0]))

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = self.model.parameters()
        if self.optimizer_factory is None:
            return torch.optim.AdamW(params, lr=1e-3)
        optimizer = self.optimizer_factory(params)
        if isinstance(optimizer, SAM):  # the pass at w + e repeats the objective's draws
            optimizer.replay(self.objective.generator)
        return optimizer

    # ----------------------------------------------------------------- set-up hooks
    def setup(self, stage: str) -> None:
        world = self.trainer.world_size if self._trainer is not None else 1
        if self.reseed_per_rank and world > 1:
            base = self.objective.generator.initial_seed()
            rank = self.trainer.global_rank
            self.objective.generator.manual_seed((base * 1_000_003 + rank + 1) % (1 << 63))

    def on_train_epoch_start(self) -> None:
        """Tell the objective's schedules the epoch (from 1) and seed a shuffling sampler."""
        epoch = int(self.current_epoch)
        set_epoch(self.objective, epoch + 1)
        loader = self.trainer.train_dataloader
        sampler = getattr(loader, "sampler", None)
        if isinstance(sampler, torch.utils.data.RandomSampler):
            # the epoch's order from (seed, epoch): a resumed run draws the same order
            sampler.generator = torch.Generator().manual_seed(
                _shuffle_seed(self.shuffle_seed, epoch))

    def needs_data_mean(self) -> bool:
        """Whether the objective is MixupE v1/v2 mixing inputs without a data mean yet."""
        objective = self.objective
        return (
            isinstance(objective, MixupE)
            and objective.version in (1, 2)
            and not isinstance(objective.mixing, ManifoldMixup)
            and objective.data_mean is None
        )

    def on_train_start(self) -> None:
        if not self.needs_data_mean():
            return

        def tensor_inputs(x: Any) -> None:
            if not isinstance(x, Tensor):
                raise InputError(
                    f"MixupE version {self.objective.version} needs tensor inputs to fit the "
                    f"data mean, got {type(x).__name__}: mix at a layer with ManifoldMixup"
                )

        xs = (split_batch(batch)[0] for batch in self.trainer.train_dataloader)
        total, count = sum_inputs(xs, check=tensor_inputs)
        if total is None:
            raise InputError("the training loader is empty; the data mean needs samples")
        strategy = self.trainer.strategy
        total = strategy.reduce(total.to(self.device), reduce_op="sum")
        count = strategy.reduce(count.to(self.device), reduce_op="sum")
        self.objective.set_data_mean((total / count).cpu().unsqueeze(0))

    # ----------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = objective_state(self.objective)
        states = [state]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            states = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(states, state)
        checkpoint[CHECKPOINT_KEY] = {"ranks": states}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get(CHECKPOINT_KEY)
        if saved is None:
            return
        states = saved["ranks"]
        rank = self.trainer.global_rank if self._trainer is not None else 0
        load_objective_state(self.objective, states[rank] if rank < len(states) else states[0])
