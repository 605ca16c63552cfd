"""Lightning: Trainer.fit with mixupe objectives against plain loops, checkpoints that resume
exactly, logged stats, and two gloo processes under strategy="ddp" against one process."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import mixupe
from spawned_ranks import free_port, spawn_ranks

pl = pytest.importorskip("pytorch_lightning")
from mixupe.lightning import CHECKPOINT_KEY, MixupModule  # noqa: E402

N, D, K = 16, 5, 3


def data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(N, D, generator=g) + 0.5, torch.arange(N) % K)


def net() -> torch.nn.Module:
    torch.manual_seed(0)  # initialisation only
    return torch.nn.Sequential(torch.nn.Linear(D, 8), torch.nn.Tanh(), torch.nn.Linear(8, K))


def mixupe_v1() -> mixupe.MixupE:
    return mixupe.MixupE(version=1, eta=0.5, threshold=None,
                         mixing=mixupe.Mixup(alpha=1.0, num_classes=K, seed=4))


def sgd(params):
    return torch.optim.SGD(params, lr=0.1)


def trainer(**kw: Any) -> Any:
    options = {"accelerator": "cpu", "devices": 1, "logger": False, "enable_checkpointing": False,
               "enable_progress_bar": False, "enable_model_summary": False,
               "num_sanity_val_steps": 0}
    return pl.Trainer(**{**options, **kw})


@pytest.fixture(autouse=True)
def _quiet(tmp_path, monkeypatch):
    # Lightning writes checkpoints and logs under the working directory by default.
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*(does not have many workers|LeafSpec|"
                                r"smaller than the logging interval|no `val_dataloader`).*")
        yield


def params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


class RecordingMixupE(mixupe.MixupE):
    """MixupE v1 of ``mixupe_v1()`` that keeps each step's output (lam, perm, stats)."""

    def __init__(self):
        super().__init__(version=1, eta=0.5, threshold=None,
                         mixing=mixupe.Mixup(alpha=1.0, num_classes=K, seed=4))
        self.outputs, self.batches = [], []

    def __call__(self, *args, **kwargs):
        out = super().__call__(*args, **kwargs)
        self.outputs.append(out)
        self.batches.append(args[1:3])  # (x, y)
        return out


def test_fit_equals_a_plain_loop_and_fits_the_data_mean():
    loader = DataLoader(data(), batch_size=4)
    objective = mixupe_v1()
    module = MixupModule(net(), objective, optimizer=sgd)
    trainer(max_epochs=2).fit(module, loader)
    x_all = data().tensors[0]
    assert torch.allclose(objective.data_mean, x_all.double().mean(0, keepdim=True))
    # The same steps written out: same init, same draws, same mean, same optimiser.
    model, reference = net(), mixupe_v1()
    reference.set_data_mean(x_all.double().mean(0))
    opt = sgd(model.parameters())
    for _ in range(2):
        for x, y in loader:
            opt.zero_grad()
            reference(model, x, y).loss.backward()
            opt.step()
    assert torch.allclose(params(module.model), params(model), atol=1e-6)


def test_stats_are_logged_as_epoch_means_and_validation_is_clean():
    loader = DataLoader(data(), batch_size=4)
    recorder = RecordingMixupE()
    module = MixupModule(net(), recorder, optimizer=sgd)
    fit = trainer(max_epochs=1)
    fit.fit(module, loader, loader)
    metrics = fit.callback_metrics
    assert len(recorder.outputs) == 4
    for name in ("loss", "mixup_loss", "regulariser", "regulariser_ratio", "selected_fraction",
                 "lam"):
        mean = sum(out.stats[name] for out in recorder.outputs) / 4
        assert abs(float(metrics[f"train/{name}"]) - mean) < 1e-5, name
    x, y = data().tensors
    with torch.no_grad():
        logits = module.model(x)
    assert abs(float(metrics["val/loss"]) - float(torch.nn.functional.cross_entropy(logits, y))) \
        < 1e-5
    assert abs(float(metrics["val/acc"]) - float((logits.argmax(1) == y).float().mean())) < 1e-6


def test_checkpoint_resume_equals_an_uninterrupted_run(tmp_path):
    loader = DataLoader(data(), batch_size=4)
    straight = MixupModule(net(), mixupe_v1(), optimizer=sgd)
    trainer(max_epochs=2).fit(straight, loader)

    first = MixupModule(net(), mixupe_v1(), optimizer=sgd)
    part = trainer(max_epochs=1)
    part.fit(first, loader)
    path = tmp_path / "one.ckpt"
    part.save_checkpoint(path)
    saved = torch.load(path, weights_only=False)[CHECKPOINT_KEY]["ranks"]
    assert len(saved) == 1
    assert torch.equal(saved[0]["data_mean"], first.objective.data_mean)

    # A fresh objective with another seed: everything it draws comes from the checkpoint.
    fresh = mixupe.MixupE(version=1, eta=0.5, threshold=None,
                          mixing=mixupe.Mixup(alpha=1.0, num_classes=K, seed=99))
    resumed = MixupModule(net(), fresh, optimizer=sgd)
    trainer(max_epochs=2).fit(resumed, loader, ckpt_path=path)
    assert torch.equal(fresh.data_mean, straight.objective.data_mean)
    assert torch.allclose(params(resumed.model), params(straight.model), atol=1e-7)
    assert torch.equal(fresh.generator.get_state(), straight.objective.generator.get_state())


def test_graph_batches_and_bad_batches():
    from mixupe.lightning import split_batch

    class Graphs:
        num_graphs = 2
        y = torch.tensor([0, 1])

    g = Graphs()
    assert split_batch(g) == (g, g.y)
    with pytest.raises(mixupe.InputError, match=r"yield \(x, y\) pairs, or PyG graph batches"):
        split_batch(torch.zeros(3))
    with pytest.raises(mixupe.InputError, match=r"is not a mixupe objective"):
        MixupModule(net(), torch.nn.CrossEntropyLoss())


# ----------------------------------------------------------------- two processes
WORLD, STEPS, BATCH = 2, 2, 4


def _ddp_worker(rank: int, port: int, root: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_RANK=str(rank),
                      NODE_RANK="0", WORLD_SIZE=str(WORLD), RANK=str(rank))
    warnings.filterwarnings("ignore")
    recorder = RecordingMixupE()
    module = MixupModule(net(), recorder, optimizer=sgd)
    fit = pl.Trainer(accelerator="cpu", devices=WORLD, strategy="ddp", max_steps=STEPS,
                     logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False)
    fit.fit(module, DataLoader(data(), batch_size=BATCH))
    fit.save_checkpoint(f"{root}/ddp.ckpt")
    torch.save({"params": params(module.model), "mean": recorder.data_mean,
                "lam": [o.lam for o in recorder.outputs],
                "perm": [o.perm for o in recorder.outputs], "batches": recorder.batches},
               f"{root}/rank{rank}.pt")


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lightning-ddp")
    spawn_ranks(_ddp_worker, (free_port(), str(root)), WORLD)
    return root


def test_ddp_two_processes_equal_one_process_averaging_their_gradients(ddp_run):
    ranks = [torch.load(ddp_run / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    x_all, y_all = data().tensors
    mean = x_all.double().mean(0, keepdim=True)
    for r in ranks:  # each device fitted its shard; the all-reduce gives the whole mean
        assert torch.allclose(r["mean"], mean)
    assert not torch.equal(ranks[0]["lam"][0], ranks[1]["lam"][0])  # devices draw their own
    assert torch.equal(ranks[0]["params"], ranks[1]["params"])
    # One process: Lightning gives each rank a DistributedSampler that shuffles the training
    # set (seed 0, epoch 0); each rank's MixupE loss on its batch with its recorded draws,
    # gradients averaged, one SGD step.
    from torch.utils.data import DistributedSampler

    shards = [torch.tensor(list(DistributedSampler(data(), num_replicas=WORLD, rank=r,
                                                   shuffle=True, seed=0)))
              for r in range(WORLD)]
    model, objective = net(), mixupe_v1()
    objective.set_data_mean(mean)
    opt = sgd(model.parameters())
    for step in range(STEPS):
        opt.zero_grad()
        grads = []
        for rank in range(WORLD):
            index = shards[rank][step * BATCH:(step + 1) * BATCH]
            assert torch.equal(ranks[rank]["batches"][step][1], y_all[index])
            loss = objective(model, x_all[index], y_all[index], lam=ranks[rank]["lam"][step],
                             perm=ranks[rank]["perm"][step]).loss
            grads.append(torch.autograd.grad(loss, list(model.parameters())))
        for p, *gs in zip(model.parameters(), *grads, strict=True):
            p.grad = sum(gs) / WORLD
        opt.step()
    assert torch.allclose(ranks[0]["params"], params(model), atol=1e-6)


def test_ddp_checkpoint_keeps_every_device_objective_state(ddp_run):
    saved = torch.load(ddp_run / "ddp.ckpt", weights_only=False)[CHECKPOINT_KEY]["ranks"]
    assert len(saved) == WORLD
    assert torch.equal(saved[0]["data_mean"], saved[1]["data_mean"])
    assert not torch.equal(saved[0]["generator"], saved[1]["generator"])


# ----------------------------------------------------------------- schedules, SAM, shuffling
def recorded(objective: Any) -> Any:
    """``objective`` itself, made to keep each call's batch, output and the global RNG state
    before the call (its class swapped for a recording subclass)."""

    class Recorded(type(objective)):
        def __call__(self, model, x, y, **kw):
            self.rng.append(torch.get_rng_state())
            self.batches.append((x, y))
            out = super().__call__(model, x, y, **kw)
            self.outputs.append(out)
            return out

    objective.__class__ = Recorded
    objective.outputs, objective.rng, objective.batches = [], [], []
    return objective


def test_set_epoch_reaches_a_schedule_inside_mixupe():
    sched = mixupe.Scheduled(mixupe.Mixup(alpha=1.0, num_classes=K, seed=2), off_epoch=2)
    rec = recorded(mixupe.MixupE(version=3, eta=0.1, mixing=sched))
    trainer(max_epochs=3).fit(MixupModule(net(), rec, optimizer=sgd),
                              DataLoader(data(), batch_size=4))
    lams = [float(o.lam) for o in rec.outputs]
    assert len(lams) == 12
    assert all(lam < 1 for lam in lams[:4])  # epoch 1 mixes
    assert all(lam == 1.0 for lam in lams[4:])  # from epoch 2 on, no mixing


def dropout_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(D, 16), torch.nn.ReLU(), torch.nn.Dropout(0.5),
                               torch.nn.Linear(16, K))


def test_sam_under_lightning_equals_hand_sam_steps():
    rec = recorded(mixupe.Mixup(alpha=1.0, num_classes=K, seed=4))
    module = MixupModule(dropout_net(), rec, optimizer=lambda p: mixupe.SAM(
        torch.optim.SGD(p, lr=0.1), rho=0.05))
    fit = trainer(max_steps=3)
    fit.fit(module, DataLoader(data(), batch_size=4))
    assert len(rec.outputs) == 6  # two passes per step
    model = dropout_net()
    params_ = list(model.parameters())
    mix = mixupe.Mixup(alpha=1.0, num_classes=K)
    for step in range(3):
        first, second = rec.outputs[2 * step], rec.outputs[2 * step + 1]
        assert torch.equal(first.lam, second.lam) and torch.equal(first.perm, second.perm)
        x, y = rec.batches[2 * step]

        def grad(rng, x=x, y=y, first=first):
            torch.set_rng_state(rng)
            loss = mix(model, x, y, lam=first.lam, perm=first.perm).loss
            return torch.autograd.grad(loss, params_)

        g = grad(rec.rng[2 * step])
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in g]))
        w0 = [p.detach().clone() for p in params_]
        with torch.no_grad():
            for p, t in zip(params_, g, strict=True):
                p.add_(0.05 * t / norm)
        g2 = grad(rec.rng[2 * step])  # the same dropout masks at w + e
        with torch.no_grad():
            for p, w, t in zip(params_, w0, g2, strict=True):
                p.copy_(w - 0.1 * t)
    assert torch.allclose(params(module.model), params(model), atol=1e-6)
    logged = float(fit.callback_metrics["train/loss"])  # the passes at w only
    assert abs(logged - sum(float(o.loss) for o in rec.outputs[0::2]) / 3) < 1e-5


def test_resume_with_a_shuffling_loader_at_an_epoch_boundary(tmp_path):
    def loader() -> DataLoader:
        return DataLoader(data(), batch_size=4, shuffle=True)

    straight = MixupModule(net(), mixupe_v1(), optimizer=sgd)
    trainer(max_epochs=3).fit(straight, loader())
    first = MixupModule(net(), mixupe_v1(), optimizer=sgd)
    part = trainer(max_epochs=1)
    part.fit(first, loader())
    part.save_checkpoint(tmp_path / "one.ckpt")
    torch.manual_seed(123)  # another global RNG state in the new process
    resumed = MixupModule(net(), mixupe_v1(), optimizer=sgd)
    trainer(max_epochs=3).fit(resumed, loader(), ckpt_path=tmp_path / "one.ckpt")
    assert torch.allclose(params(resumed.model), params(straight.model), atol=1e-7)


def test_validation_accepts_soft_targets():
    x, _ = data().tensors
    soft = torch.softmax(torch.randn(N, K, generator=torch.Generator().manual_seed(3)), 1)
    module = MixupModule(net(), mixupe_v1(), optimizer=sgd)
    fit = trainer(max_epochs=1)
    fit.fit(module, DataLoader(data(), batch_size=4),
            DataLoader(TensorDataset(x, soft), batch_size=4))
    with torch.no_grad():
        logits = module.model(x)
    want = -(soft * torch.log_softmax(logits, 1)).sum(1).mean()
    assert abs(float(fit.callback_metrics["val/loss"]) - float(want)) < 1e-5
    acc = (logits.argmax(1) == soft.argmax(1)).float().mean()
    assert abs(float(fit.callback_metrics["val/acc"]) - float(acc)) < 1e-6


def test_training_steps_do_not_read_values_back_each_step(monkeypatch):
    """``Tensor.item`` calls (a host read each) over a fit with the progress bar on do not grow
    with the number of steps: nothing is logged to the progress bar per step."""
    reads = []
    item = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda t: reads.append(1) or item(t))
    counts = []
    for n in (8, 32):
        g = torch.Generator().manual_seed(0)
        ds = TensorDataset(torch.randn(n, D, generator=g), torch.arange(n) % K)
        objective = mixupe.Mixup(alpha=1.0, num_classes=K, validate=False, check_finite=False)
        reads.clear()
        trainer(max_epochs=1, enable_progress_bar=True).fit(
            MixupModule(net(), objective, optimizer=sgd), DataLoader(ds, batch_size=4))
        counts.append(len(reads))
    assert counts[0] == counts[1], counts
