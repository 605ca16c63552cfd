"""Hugging Face ``transformers`` integration: any mixupe objective as a ``Trainer``'s loss.

Needs the optional extra ``transformers`` (``pip install "mixupe[transformers]"``; keep your
torch build: add ``"torch==<yours>"`` to the command).

:class:`MixupTrainer` is a ``transformers.Trainer`` whose :meth:`~MixupTrainer.compute_loss`
pops ``labels`` from the batch (so the model computes no loss of its own), calls the model as
``model(**batch)`` through :class:`DictLogits`, and returns the objective's loss:

- Gradient accumulation: the Trainer passes ``num_items_in_batch``, the number of labels in
  the whole accumulated batch; the loss is then the batch's share, ``mean * B /
  num_items_in_batch``, so a step over micro-batches of 8 + 8 is the step of one batch of 16
  with the same per-sample losses (micro-batches of unequal size are weighted by their size).
  Float labels ``(B, K)`` count as ``B`` items. Without it, the Trainer averages the
  micro-batch means.
- MixupE's clean pass (and its input-gradient pass) run inside the same ``compute_loss``.
- Text: mixing happens at a named submodule of the Hugging Face model. Names are those of
  ``model.named_modules()``; for ``BertForSequenceClassification`` (and other BERT-like
  models: RoBERTa uses ``roberta.``, DistilBERT has no pooler):

  - ``"bert.pooler"``: the pooled ``[CLS]`` representation ``(B, D)``, the Mixup-Transformer
    recipe (Sun et al., 2020);
  - ``"bert.encoder.layer.N"``: the hidden states ``(B, L, D)`` after layer ``N`` (each
    sample keeps its own attention mask);
  - ``"bert.embeddings"``: the token embeddings (Manifold Mixup's input-level variant for
    token ids, which cannot be mixed themselves).

  Use ``ManifoldMixup(layers=[...])``, or ``MixupE(mixing=ManifoldMixup(layers=[...]))``.
- The objective's state (its generator; MixupE's means) is saved as ``mixupe_objective.pt``
  in every checkpoint folder and restored by ``train(resume_from_checkpoint=...)``, next to
  the Trainer's own model, optimiser, scheduler, RNG and data-order state, so a resumed run
  continues as the uninterrupted one.

Example (not a doctest: it trains; docs/guide/integrations.md has a runnable one):

.. code-block:: python

    from transformers import BertConfig, BertForSequenceClassification, TrainingArguments
    import mixupe
    from mixupe.hf import MixupTrainer

    model = BertForSequenceClassification(BertConfig(num_labels=4))
    objective = mixupe.ManifoldMixup(alpha=1.0, layers=["bert.pooler"], num_classes=4)
    MixupTrainer(model=model, args=TrainingArguments("out"), train_dataset=data,
                 objective=objective).train()
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from mixupe.engine.state import load_objective_state, objective_state
from mixupe.engine.step import training_step
from mixupe.errors import ConfigError, DataUnavailableError, InputError
from mixupe.objectives import Objective

try:
    import transformers
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise DataUnavailableError(
        "mixupe.hf needs Hugging Face transformers; install it with `pip install transformers "
        "accelerate \"torch==<your torch version>\"` (the pin keeps your torch build)"
    ) from exc

__all__ = ["OBJECTIVE_FILE", "DictLogits", "MixupTrainer"]

OBJECTIVE_FILE = "mixupe_objective.pt"


class DictLogits(nn.Module):
    """``batch -> model(**batch).logits``: a Hugging Face model as a mixupe model.

    Submodule names are the wrapped model's own (``named_modules`` is delegated), so
    ``ManifoldMixup(layers=["bert.pooler"])`` names ``model.bert.pooler``. ``names`` gives
    another module to take the names from (the unwrapped model when ``model`` is a DDP
    wrapper, whose names start with ``module.``).

    Example:
        >>> net = DictLogits(torch.nn.Linear(2, 3), output_key=None)
        >>> net({"input": torch.zeros(4, 2)}).shape
        torch.Size([4, 3])
    """

    def __init__(self, model: nn.Module, *, names: nn.Module | None = None,
                 output_key: str | None = "logits") -> None:
        super().__init__()
        self.model = model
        self._names = [model if names is None else names]  # a list: not a second child
        self.output_key = output_key

    def forward(self, batch: Mapping[str, Any]) -> Tensor:
        if not isinstance(batch, Mapping):
            raise InputError(
                f"DictLogits takes a dict batch (the model is called as model(**batch)), got "
                f"{type(batch).__name__}: pass the tokenizer's output dict."
            )
        out = self.model(**batch)
        if self.output_key is None or isinstance(out, Tensor):
            return out
        if isinstance(out, Mapping) and self.output_key in out:
            return out[self.output_key]
        if isinstance(out, tuple) and out:
            return out[0]
        raise InputError(
            f"the model's output {type(out).__name__} has no {self.output_key!r}: pass "
            "output_key= naming the (B, K) logits."
        )

    def named_modules(self, memo: set[nn.Module] | None = None, prefix: str = "",
                      remove_duplicate: bool = True) -> Iterator[tuple[str, nn.Module]]:
        return self._names[0].named_modules(memo, prefix, remove_duplicate)


class MixupTrainer(transformers.Trainer):
    """A ``transformers.Trainer`` training with a mixupe objective; see the module docstring.

    Args:
        objective: ``ERM``, ``Mixup``, ``ManifoldMixup``, ``MixupE``, ... (keyword only).
        label_key: the batch entry holding the labels (default ``"labels"``).
        output_key: the model output entry holding the logits (default ``"logits"``).
        *args, **kwargs: ``transformers.Trainer``'s own.
    """

    def __init__(self, *args: Any, objective: Objective, label_key: str = "labels",
                 output_key: str = "logits", **kwargs: Any) -> None:
        if not isinstance(objective, Objective):
            raise ConfigError(
                f"objective={objective!r} is not a mixupe objective: pass e.g. "
                "mixupe.ManifoldMixup(alpha=1.0, layers=['bert.pooler'], num_classes=K)."
            )
        super().__init__(*args, **kwargs)
        self.objective = objective
        self.label_key = label_key
        self.output_key = output_key
        # compute_loss normalises by num_items_in_batch itself: the Trainer must not also
        # divide by the accumulation steps (its rule in transformers >= 4.46)
        self.model_accepts_loss_kwargs = True
        self.last_output: Any = None
        self.add_callback(_SaveObjective(self))

    def compute_loss(self, model: nn.Module, inputs: Mapping[str, Any],
                     return_outputs: bool = False, num_items_in_batch: Any = None,
                     **kwargs: Any) -> Any:
        """The objective's loss on ``inputs`` (``labels`` popped before the forward)."""
        batch = dict(inputs)
        if self.label_key not in batch:
            raise InputError(
                f"the batch has no {self.label_key!r} entry (entries: {sorted(batch)}): "
                "give the dataset labels, or pass label_key= to MixupTrainer."
            )
        labels = batch.pop(self.label_key)
        unwrapped = self.accelerator.unwrap_model(model)
        net = DictLogits(model, names=unwrapped, output_key=self.output_key)
        result = training_step(self.objective, net, (batch, labels))
        out = self.last_output = result.output
        loss = result.loss
        if num_items_in_batch is not None:
            items = num_items_in_batch
            if labels.is_floating_point() and labels.dim() == 2:
                items = items / labels.shape[1]  # the Trainer counts every entry of (B, K)
            loss = loss * (labels.shape[0] / items)
            if getattr(self.args, "average_tokens_across_devices", False):
                loss = loss * self.accelerator.num_processes  # the count is global; DDP averages
        if return_outputs:
            return loss, {"logits": out.logits}
        return loss

    # ----------------------------------------------------------------- objective state
    def _objective_state(self) -> dict[str, Any]:
        return objective_state(self.objective)

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any,
              **kwargs: Any) -> Any:
        """``Trainer.train``, restoring the objective's state from the checkpoint first."""
        folder = resume_from_checkpoint
        if folder is True:
            folder = transformers.trainer_utils.get_last_checkpoint(self.args.output_dir)
            if folder is None:
                raise ConfigError(
                    f"resume_from_checkpoint=True but {self.args.output_dir!r} holds no "
                    "checkpoint-* folder: pass the checkpoint's path, or train from the start."
                )
        if isinstance(folder, str):
            self._load_objective(folder)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _load_objective(self, folder: str) -> None:
        rank = max(int(self.args.process_index), 0)
        path = os.path.join(folder, _state_name(rank))
        if not os.path.exists(path):
            path = os.path.join(folder, _state_name(0))
        if not os.path.exists(path):
            raise ConfigError(
                f"{folder!r} holds no {OBJECTIVE_FILE}: it was not saved by MixupTrainer, so "
                "the objective's draws cannot continue; resume from a MixupTrainer checkpoint."
            )
        load_objective_state(self.objective, torch.load(path, weights_only=False))


class _SaveObjective(transformers.TrainerCallback):
    """Writes the objective's state into each checkpoint folder the Trainer has just saved."""

    def __init__(self, trainer: MixupTrainer) -> None:
        self.trainer = trainer

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if os.path.isdir(folder):
            rank = max(int(args.process_index), 0)
            torch.save(self.trainer._objective_state(), os.path.join(folder, _state_name(rank)))


def _state_name(rank: int) -> str:
    return OBJECTIVE_FILE if rank == 0 else OBJECTIVE_FILE.replace(".pt", f".rank{rank}.pt")
