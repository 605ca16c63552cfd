"""Hugging Face Trainer: MixupTrainer against plain loops on a tiny randomly initialised BERT
(built from a config, nothing downloaded): the same steps, gradient accumulation normalised by
the accumulated item count, mixing at the pooled [CLS] output, and exact resume."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

import mixupe

transformers = pytest.importorskip(
    "transformers", reason='needs the transformers extra: pip install transformers accelerate '
    '"torch==<your torch>"')
pytest.importorskip("accelerate", reason="needs accelerate: pip install accelerate")
from mixupe.hf import OBJECTIVE_FILE, DictLogits, MixupTrainer  # noqa: E402

K, VOCAB, LENGTH = 3, 40, 6


def bert(dropout: float = 0.0) -> torch.nn.Module:
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=LENGTH, num_labels=K,
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    torch.manual_seed(0)  # initialisation only
    return transformers.BertForSequenceClassification(config)


class Tokens(torch.utils.data.Dataset):
    """Synthetic token sequences with padding; the label is the first token modulo K."""

    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(1)
        self.ids = torch.randint(1, VOCAB, (n, LENGTH), generator=g)
        lengths = torch.randint(3, LENGTH + 1, (n,), generator=g)
        self.mask = (torch.arange(LENGTH) < lengths[:, None]).long()
        self.ids = self.ids * self.mask
        self.labels = self.ids[:, 0] % K

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i],
                "labels": self.labels[i]}


class Recording:
    """Wraps an objective; keeps every batch it is called on (to replay the Trainer's order)."""

    def __init__(self, objective: Any) -> None:
        self.objective, self.batches = objective, []

    def __call__(self, model, x, y, **kw):
        self.batches.append(({k: v.clone() for k, v in x.items()}, y.clone()))
        return self.objective(model, x, y, **kw)


def pooled_mixup(seed: int = 3) -> mixupe.ManifoldMixup:
    return mixupe.ManifoldMixup(alpha=1.0, layers=["bert.pooler"], num_classes=K, seed=seed)


def args(root: Path, **kw: Any) -> Any:
    options = dict(output_dir=str(root), use_cpu=True, report_to=[], per_device_train_batch_size=8,
                   num_train_epochs=1, save_strategy="no", logging_strategy="no",
                   disable_tqdm=True, seed=0, dataloader_num_workers=0,
                   lr_scheduler_type="constant")
    return transformers.TrainingArguments(**{**options, **kw})


def fit(root: Path, objective: Any, data: Any, *, model: Any = None, resume: Any = None,
        **kw: Any) -> tuple[torch.nn.Module, Any]:
    model = bert() if model is None else model
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    trainer = MixupTrainer(model=model, args=args(root, **kw), train_dataset=data,
                           optimizers=(opt, None),
                           objective=getattr(objective, "objective", objective))
    trainer.objective = objective  # a Recording passes through (the check is at __init__)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train(resume_from_checkpoint=resume)
    return model, trainer


def params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_trainer_equals_a_plain_loop_with_the_same_objective(tmp_path):
    def objective() -> mixupe.MixupE:
        return mixupe.MixupE(version=3, eta=0.5, threshold=None, mixing=pooled_mixup())

    recorder = Recording(objective())
    trained, _ = fit(tmp_path, recorder, Tokens(24), num_train_epochs=2)
    assert len(recorder.batches) == 6
    # the Trainer's data order replayed by hand: a fresh objective with the same seed, SGD
    model, replay = bert(), objective()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for x, y in recorder.batches:
        opt.zero_grad()
        replay(DictLogits(model), x, y).loss.backward()
        opt.step()
    assert torch.allclose(params(trained), params(model), atol=1e-6)
    assert not torch.allclose(params(trained), params(bert()), atol=1e-3)  # it trained


def test_gradient_accumulation_two_by_eight_equals_sixteen(tmp_path):
    data = Tokens(32)
    one, _ = fit(tmp_path / "a", mixupe.ERM(num_classes=K), data, per_device_train_batch_size=16)
    acc, _ = fit(tmp_path / "b", mixupe.ERM(num_classes=K), data, per_device_train_batch_size=8,
                 gradient_accumulation_steps=2)
    assert torch.allclose(params(one), params(acc), atol=1e-6)


def test_accumulation_weights_uneven_micro_batches_by_their_items(tmp_path):
    """20 samples, batches of 8, 3 accumulation steps: one step over 8 + 8 + 4 samples, each
    micro-batch's mean loss weighted by its share of the 20 items (not a third each)."""
    recorder = Recording(pooled_mixup())
    trained, _ = fit(tmp_path, recorder, Tokens(20), gradient_accumulation_steps=3)
    assert [len(y) for _, y in recorder.batches] == [8, 8, 4]
    model, replay = bert(), pooled_mixup()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    opt.zero_grad()
    for x, y in recorder.batches:
        (replay(DictLogits(model), x, y).loss * len(y) / 20).backward()
    opt.step()
    assert torch.allclose(params(trained), params(model), atol=1e-6)
    mean_of_means = bert()
    opt = torch.optim.SGD(mean_of_means.parameters(), lr=0.5)
    replay = pooled_mixup()
    for x, y in recorder.batches:
        (replay(DictLogits(mean_of_means), x, y).loss / 3).backward()
    opt.step()
    assert not torch.allclose(params(trained), params(mean_of_means), atol=1e-6)


def test_pooled_mixing_equals_the_hand_formula():
    model, data = bert(), Tokens(8)
    batch = {"input_ids": data.ids, "attention_mask": data.mask}
    out = pooled_mixup()(DictLogits(model), batch, data.labels)
    with torch.no_grad():
        pooled = model.bert(**batch).pooler_output
        mixed = out.lam * pooled + (1 - out.lam) * pooled[out.perm]
        logits = model.classifier(model.dropout(mixed))
        logp = torch.log_softmax(logits, 1)
        y = data.labels
        expect = -(out.lam * logp[torch.arange(8), y]
                   + (1 - out.lam) * logp[torch.arange(8), y[out.perm]]).mean()
    assert out.layer == "bert.pooler"
    assert torch.allclose(out.logits, logits, atol=1e-6)
    assert torch.allclose(out.loss, expect, atol=1e-6)


@pytest.mark.parametrize("step", [2, 3])  # within the first epoch, and at its boundary
def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(tmp_path, step):
    data = Tokens(24)  # 3 steps per epoch
    kw = {"num_train_epochs": 2, "save_strategy": "steps", "save_steps": step}
    straight, first = fit(tmp_path / "a", pooled_mixup(), data, model=bert(0.1), **kw)
    folder = tmp_path / "a" / f"checkpoint-{step}"
    assert (folder / OBJECTIVE_FILE).exists()
    fresh = pooled_mixup(seed=99)  # every draw must come from the checkpoint
    resumed, _ = fit(tmp_path / "a", fresh, data, model=bert(0.1), resume=str(folder), **kw)
    assert torch.allclose(params(resumed), params(straight), atol=1e-6)
    assert torch.equal(fresh.generator.get_state(), first.objective.generator.get_state())


def test_bad_objective_and_missing_labels(tmp_path):
    with pytest.raises(mixupe.ConfigError, match="is not a mixupe objective"):
        MixupTrainer(model=bert(), args=args(tmp_path), objective=torch.nn.CrossEntropyLoss())
    trainer = MixupTrainer(model=bert(), args=args(tmp_path), objective=pooled_mixup())
    with pytest.raises(mixupe.InputError, match=r"has no 'labels' entry.*label_key="):
        trainer.compute_loss(trainer.model, {"input_ids": Tokens(4).ids})


def test_readme_example_runs(tmp_path, monkeypatch):
    # the README's Hugging Face section, moved to the user guide
    guide = Path(__file__).resolve().parent.parent / "docs" / "guide" / "integrations.md"
    match = re.search(r"## Hugging Face Trainer.*?```python\n(.*?)```", guide.read_text(), re.S)
    assert match, "the user guide's Hugging Face section has no python block"
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(match.group(1), "docs/guide/integrations.md", "exec"), {})
