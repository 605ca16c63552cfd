"""Two CPU processes with the gloo backend on loopback, spawned by the test.

Checks against independent single-process computations:
- ERM with per-rank batch B over 2 ranks equals one process with batch 2B (same samples per
  step, gradients averaged by DDP), parameters to float tolerance;
- the model is bit-identical on both ranks (SHA-256 of every tensor) after each epoch;
- the data mean fitted on two shards equals the mean of the whole training split;
- metrics recorded under DDP (shards all-reduced) equal a single-process evaluation;
- 1 epoch + resume + 1 epoch under DDP equals 2 straight epochs under DDP, bit for bit;
- each rank mixes with its own generator.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

import mixupe.data
import mixupe.models
from mixupe.engine import TrainConfig, evaluate, train
from mixupe.engine.checkpoint import load_checkpoint
from mixupe.engine.distributed import setup
from mixupe.engine.trainer import fit_data_mean, model_digest
from spawned_ranks import free_port, spawn_ranks

WORLD = 2
SUBSET = 1000  # even: no padding, so each step's 2 x 64 samples are the single run's 128
ERM = {"dataset": "digits", "model": "mlp", "method": "erm", "epochs": 1, "lr": 0.1,
       "schedule": "constant", "data_options": {"subset": SUBSET},
       "model_options": {"hidden": (32,)}}
MIXUPE = {"dataset": "digits", "model": "mlp", "method": "mixupe", "version": 1, "eta": 0.5,
          "epochs": 2, "lr": 0.05, "batch_size": 64,
          "model_options": {"hidden": (32,), "batch_norm": True, "dropout": 0.1}}


def _worker(rank: int, ports: tuple[int, int], root: str) -> None:
    torch.set_num_threads(1)
    # 1) the torchrun path: the engine starts (and ends) the process group from the environment
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(ports[0]), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    train(TrainConfig(**ERM, batch_size=64), runs_root=f"{root}/ddp", progress=False)
    assert not dist.is_initialized()
    # 2) a group started by the caller is reused
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{ports[1]}", rank=rank,
                            world_size=WORLD)
    try:
        ctx = setup("cpu")
        assert (ctx.rank, ctx.world_size) == (rank, WORLD)
        mean = fit_data_mean(mixupe.data.load("digits").train, ctx=ctx, batch_size=100)
        torch.save(mean, f"{root}/mean{rank}.pt")
        cfg = TrainConfig(**MIXUPE)
        train(cfg, runs_root=f"{root}/straight", progress=False)
        part = train(cfg, runs_root=f"{root}/resumed", progress=False, max_epochs=1)
        assert not part.complete
        done = train(cfg, runs_root=f"{root}/resumed", progress=False, resume=True)
        assert done.complete
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    spawn_ranks(_worker, ((free_port(), free_port()), str(root)), WORLD)
    return root


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _checkpoint(root: Path, cfg: TrainConfig) -> dict[str, Any]:
    return load_checkpoint(root / cfg.run_name() / "checkpoint.pt")


def test_two_ranks_equal_one_process_with_the_concatenated_batch(
    ddp_runs: Path, tmp_path: Path
) -> None:
    ddp_cfg = TrainConfig(**ERM, batch_size=64)
    ddp = _checkpoint(ddp_runs / "ddp", ddp_cfg)
    assert ddp["world_size"] == WORLD
    assert ddp["global_step"] == math.ceil(SUBSET / 128)
    digests = {r["model_digest"] for r in ddp["rank_states"]}
    assert len(digests) == 1  # identical parameters on both ranks
    single = train(TrainConfig(**ERM, batch_size=128), runs_root=tmp_path, progress=False)
    ref = load_checkpoint(single.run_dir / "checkpoint.pt")["model"]
    assert ref.keys() == ddp["model"].keys()
    for k in ref:
        assert torch.allclose(ddp["model"][k], ref[k], atol=1e-5, rtol=0), k
    # the rank-0 checkpoint's model is the one the digest describes
    ds = mixupe.data.load("digits", subset=SUBSET)
    model = mixupe.models.build("mlp", input_shape=ds.input_shape, num_classes=10,
                                hidden=(32,))
    model.load_state_dict(ddp["model"])
    assert model_digest(model) in digests
    # metrics under DDP (each rank its shard, sums all-reduced) equal one process's evaluation:
    # the final full evaluation (test, FGSM, reliability bins) and the per-epoch validation
    record = json.loads((ddp_runs / "ddp" / ddp_cfg.run_name() / "metrics.jsonl")
                        .read_text().splitlines()[-1])
    result = json.loads((ddp_runs / "ddp" / ddp_cfg.run_name() / "result.json").read_text())
    for split in ("val", "test"):  # test: with the attack and the bins; val: the last record
        local = evaluate(model, getattr(ds, split), reliability=split == "test",
                         fgsm_eps=ddp_cfg.fgsm_eps if split == "test" else None)
        bins = local.pop("reliability", None)
        assert set(local) == set(result[split]) - {"reliability"}
        for key, value in local.items():
            assert result[split][key] == pytest.approx(value, rel=1e-9, abs=1e-12), (split, key)
        if bins is not None:
            assert result[split]["reliability"]["count"] == bins["count"]
            assert result[split]["reliability"]["acc"] == pytest.approx(bins["acc"], abs=1e-12)
    assert result["val"] == record["val"]


def test_data_mean_over_shards_equals_the_global_mean(ddp_runs: Path) -> None:
    whole = mixupe.data.load("digits").train.x.double().mean(0)
    for rank in range(WORLD):
        assert torch.allclose(torch.load(ddp_runs / f"mean{rank}.pt"), whole, atol=1e-12)
    ckpt = _checkpoint(ddp_runs / "straight", TrainConfig(**MIXUPE))
    for state in ckpt["rank_states"]:
        stored = state["objective"]["data_mean"]
        assert torch.allclose(stored.reshape(whole.shape), whole, atol=1e-12)


def test_resume_under_ddp_equals_straight_run(ddp_runs: Path) -> None:
    cfg = TrainConfig(**MIXUPE)
    straight = _checkpoint(ddp_runs / "straight", cfg)
    resumed = _checkpoint(ddp_runs / "resumed", cfg)
    for k in straight["model"]:
        assert torch.equal(straight["model"][k], resumed["model"][k]), k
    for a, b in zip(straight["rank_states"], resumed["rank_states"], strict=True):
        assert a["model_digest"] == b["model_digest"]
        assert torch.equal(a["mix_generator"], b["mix_generator"])
    assert len({r["model_digest"] for r in straight["rank_states"]}) == 1

    def records(root: Path) -> list[dict[str, Any]]:
        rows = [json.loads(x) for x in
                (root / cfg.run_name() / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rows]

    assert records(ddp_runs / "straight") == records(ddp_runs / "resumed")
    # each rank mixes with its own generator, seeded from (seed, rank)
    states = straight["rank_states"]
    assert not torch.equal(states[0]["mix_generator"], states[1]["mix_generator"])
    env = json.loads((ddp_runs / "straight" / cfg.run_name() / "config.json").read_text())
    assert env["environment"]["world_size"] == WORLD


def test_resume_with_another_world_size_is_refused(ddp_runs: Path, tmp_path: Path) -> None:
    import shutil

    from mixupe.errors import ConfigError

    cfg = TrainConfig(**MIXUPE)
    src = ddp_runs / "resumed" / cfg.run_name()
    dst = tmp_path / cfg.run_name()
    shutil.copytree(src, dst)
    (dst / "result.json").unlink()
    with pytest.raises(ConfigError, match=r"written by 2 process\(es\) but this run has 1"):
        train(cfg, runs_root=tmp_path, progress=False, resume=True)


def test_setup_errors_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from mixupe.errors import ConfigError

    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match=r"WORLD_SIZE='two' is not an integer.*torchrun"):
        setup("cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ConfigError, match=r"device='cuda:1' would put all 2 processes on one"):
        setup("cuda:1")
    monkeypatch.setenv("WORLD_SIZE", "1")
    ctx = setup("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.distributed) == (0, 1, True, False)
