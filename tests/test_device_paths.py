"""The CUDA paths, checked on the CPU where a CPU can show the defect (issue 25).

- the suite pins ``device="auto"`` to the CPU, also where CUDA is available (a mocked
  ``torch.cuda.is_available``), in this process and in the processes it starts;
- random draws reach the host through blocking copies (a non-blocking copy from a GPU to the
  host returns before the data lands);
- a representation mean restored from a checkpoint continues on the batch's device;
- batches of a CPU split bound for CUDA are gathered into pinned memory, and only those
  copies are non-blocking;
- ``amp_dtype`` picks the autocast dtype, and fp16's gradient scaler runs in the engine and
  round-trips through the checkpoint (CPU autocast and a CPU scaler stand in for CUDA's);
- ``deterministic=True`` sets PyTorch's deterministic switches for the run only;
- the step-time benchmark's CPU clock stops before the closing device synchronisation.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import mixupe
from mixupe.data import TensorSplit, batches
from mixupe.engine import TrainConfig, train
from mixupe.engine import distributed as D
from mixupe.engine import trainer as T
from mixupe.engine.checkpoint import load_checkpoint
from mixupe.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"hidden": (16,)}


def _cfg(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = {"dataset": "digits", "model": "mlp", "epochs": 2, "lr": 0.05,
                            "batch_size": 64, "model_options": SMALL,
                            "data_options": {"subset": 400}}
    return TrainConfig(**{**base, **kw})


# ---------------------------------------------------------------------- 1. the CPU pin
def test_auto_is_the_cpu_in_tests_even_where_cuda_is_available(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert D.resolve_device("auto") == torch.device("cpu")
    assert D.setup("auto").device == torch.device("cpu")
    result = train(_cfg(epochs=1), runs_root=tmp_path, progress=False)  # device="auto"
    env = json.loads((result.run_dir / "config.json").read_text())["environment"]
    assert env["device"] == "cpu"
    # the pin is what keeps it there: without it, "auto" takes the (mocked) GPU
    monkeypatch.delenv(D.DEVICE_ENV)
    assert D.resolve_device("auto") == torch.device("cuda", 0)
    assert D.resolve_device("auto", local_rank=1) == torch.device("cuda", 1)
    assert D.resolve_device("cpu") == torch.device("cpu")


def test_the_pin_is_checked(monkeypatch):
    monkeypatch.setenv(D.DEVICE_ENV, "tpu")
    with pytest.raises(ConfigError, match=r"MIXUPE_DEVICE='tpu' is not a device.*'cuda:N'"):
        D.resolve_device("auto")
    monkeypatch.setenv(D.DEVICE_ENV, "cuda")
    with pytest.raises(ConfigError, match=r"device='cuda' but CUDA is not available"):
        D.resolve_device("auto")
    assert D.resolve_device("cpu") == torch.device("cpu")  # an explicit device is kept


def test_started_processes_inherit_the_cpu_pin():
    code = ("import torch; torch.cuda.is_available = lambda: True; "
            "from mixupe.engine.distributed import resolve_device; print(resolve_device('auto'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert done.stdout.strip() == "cpu"


# ---------------------------------------------------------------------- 4. host copies
class _ToSpy:
    """Records each ``Tensor.to`` towards the host with ``non_blocking=True``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.racy: list[str] = []
        real = torch.Tensor.to

        def to(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            target = kwargs.get("device", args[0] if args else None)
            if isinstance(target, str | torch.device) and kwargs.get("non_blocking") and \
                    torch.device(target).type == "cpu":
                self.racy.append(f"{tuple(tensor.shape)} to {target}")
            return real(tensor, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, "to", to)


FAST = {"num_classes": 4, "validate": False, "check_finite": False}


@pytest.mark.parametrize("make", [
    pytest.param(lambda: mixupe.Mixup(label_alpha=0.4, per_sample=True, **FAST), id="mixup"),
    pytest.param(lambda: mixupe.CutMix(**FAST), id="cutmix"),
    pytest.param(lambda: mixupe.CutMix(minmax=(0.2, 0.8), **FAST), id="cutmix-minmax"),
    pytest.param(lambda: mixupe.SaliencyMix(**FAST), id="saliencymix"),
    pytest.param(lambda: mixupe.MixupE(mixing=mixupe.Mixup(**FAST), clean_fraction=0.5,
                                       validate=False, check_finite=False), id="mixupe-cf"),
    pytest.param(lambda: mixupe.FMix(**FAST), id="fmix"),
    pytest.param(lambda: mixupe.ResizeMix(**FAST), id="resizemix"),
])
def test_draws_reach_host_inputs_through_blocking_copies(make, monkeypatch):
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 6 * 6, 4))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 1, 6, 6, generator=g), torch.randint(0, 4, (8,), generator=g)
    objective = make()
    spy = _ToSpy(monkeypatch)
    objective(net, x, y).loss.backward()
    assert spy.racy == []


def test_to_device_is_non_blocking_only_away_from_the_host(monkeypatch):
    from mixupe._transfer import to_device

    seen = []
    real = torch.Tensor.to
    monkeypatch.setattr(torch.Tensor, "to", lambda t, *a, **k: seen.append(k) or real(t, *a, **k))
    to_device(torch.ones(2), "cpu")
    to_device(torch.ones(2), "meta", torch.float64)
    assert [k["non_blocking"] for k in seen] == [False, True]
    assert seen[1]["dtype"] == torch.float64


# ---------------------------------------------------------------------- 5. layer means
def _manifold_v1() -> mixupe.MixupE:
    return mixupe.MixupE(mixing=mixupe.ManifoldMixup(layers=["1"], **FAST), version=1,
                         eta=0.5, mean_decay=0.9, validate=False, check_finite=False)


class _Consumers(TorchDispatchMode):
    """Notes the ops that take ``watched`` as an input."""

    def __init__(self, watched: torch.Tensor) -> None:
        super().__init__()
        self.watched, self.ops = watched, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if any(a is self.watched for a in tree_flatten((args, kwargs or {}))[0]):
            self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def test_a_restored_representation_mean_continues_on_the_batch_device():
    net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 3, generator=g), torch.randint(0, 4, (6,), generator=g)
    trained = _manifold_v1()
    trained(net, x, y, lam=0.3, perm=torch.tensor([1, 2, 0, 4, 5, 3]))
    state = trained.state_dict()
    old = state["layer_means"]["1"]
    assert old.device.type == "cpu"
    # on the CPU: the EMA goes on from the restored mean
    h = torch.randn(6, 5, generator=g)
    resumed = _manifold_v1()
    resumed.load_state_dict(state)
    torch.testing.assert_close(resumed._layer_mean("1", h), 0.9 * old + 0.1 * h.mean(0))
    # on another device (meta stands in for the GPU): the restored mean is carried over
    resumed = _manifold_v1()
    resumed.load_state_dict(state)
    watched = resumed.layer_means["1"]
    with _Consumers(watched) as mode:
        resumed._layer_mean("1", torch.randn(6, 5, device="meta"))
    assert mode.ops, "the restored mean was dropped on the new device"
    assert resumed.layer_means["1"].device.type == "meta"


# ---------------------------------------------------------------------- 9. pinned batches
def test_cpu_batches_for_cuda_are_pinned_and_only_those_copies_are_non_blocking(monkeypatch):
    g = torch.Generator().manual_seed(2)
    split = TensorSplit(torch.randn(10, 3, generator=g), torch.arange(10))
    pinned, copies = [], []  # the pinned tensors are kept, so no id is reused
    real_empty = torch.empty

    def empty(*args: Any, pin_memory: bool = False, **kwargs: Any) -> torch.Tensor:
        out = real_empty(*args, **kwargs)  # this CPU build cannot pin: note it instead
        if pin_memory:
            pinned.append(out)
        return out

    def to(t: torch.Tensor, device: Any, *, non_blocking: bool = False) -> torch.Tensor:
        if torch.device(device) != t.device:  # a copy (the index is moved to the split's
            copies.append((any(t is p for p in pinned), non_blocking,  # device)
                           torch.device(device).type))
        return t  # stays on the CPU: the values can be compared

    monkeypatch.setattr(torch, "empty", empty)
    monkeypatch.setattr(torch.Tensor, "to", to)
    for shuffle in (False, True):
        copies.clear()
        order = torch.randperm(10, generator=torch.Generator().manual_seed(3))
        got = list(batches(split, batch_size=4, shuffle=shuffle, device="cuda",
                           generator=torch.Generator().manual_seed(3)))
        index = order if shuffle else torch.arange(10)
        assert torch.equal(torch.cat([x for x, _ in got]), split.x[index])
        assert torch.equal(torch.cat([y for _, y in got]), split.y[index])
        assert copies == [(True, True, "cuda")] * 6  # x and y of 3 batches
    # a copy towards the host (a GPU split, here meta, to the CPU) is neither pinned nor async
    copies.clear()
    meta = TensorSplit(torch.empty(4, 3, device="meta"),
                       torch.empty(4, dtype=torch.int64, device="meta"))
    list(batches(meta, batch_size=4, shuffle=False, device="cpu"))
    assert copies == [(False, False, "cpu")] * 2


# ---------------------------------------------------------------------- 6. amp_dtype
@pytest.mark.parametrize(("choice", "bf16", "dtype", "scaled"), [
    ("auto", True, torch.bfloat16, False), ("auto", False, torch.float16, True),
    ("bf16", True, torch.bfloat16, False), ("fp16", True, torch.float16, True),
    ("fp16", False, torch.float16, True),
])
def test_amp_dtype_picks_the_autocast_dtype_and_the_scaler(choice, bf16, dtype, scaled,
                                                           monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    made = []
    monkeypatch.setattr(torch.amp, "GradScaler", lambda device: made.append(device) or device)
    got, scaler = T._amp_setup(_cfg(amp=True, amp_dtype=choice), torch.device("cuda", 0))
    assert got == dtype and (scaler == "cuda") == scaled and made == (["cuda"] if scaled else [])
    assert T._amp_setup(_cfg(), torch.device("cuda", 0)) == (None, None)


def test_amp_dtype_bf16_without_support_and_amp_on_the_cpu_are_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    with pytest.raises(ConfigError, match=r"amp_dtype='bf16' but cuda:0 \(Tesla T4\) does not "
                                          r"support bfloat16; use --amp-dtype fp16"):
        T._amp_setup(_cfg(amp=True, amp_dtype="bf16"), torch.device("cuda", 0))
    with pytest.raises(ConfigError, match=r"amp=True needs a CUDA device.*drop --amp"):
        T._amp_setup(_cfg(amp=True, amp_dtype="fp16"), torch.device("cpu"))


@pytest.fixture
def cpu_fp16(monkeypatch):
    """The engine's fp16 path on the CPU: CPU autocast and a CPU gradient scaler that grows
    its scale every step, so its state changes every step and a lost state shows."""
    scalers = []

    def setup(cfg, device):
        scalers.append(torch.amp.GradScaler("cpu", growth_interval=1))
        return torch.float16, scalers[-1]

    monkeypatch.setattr(T, "_amp_setup", setup)
    return scalers


def test_fp16_scaler_runs_and_round_trips_through_the_checkpoint(cpu_fp16, tmp_path):
    cfg = _cfg(amp=True, amp_dtype="fp16", device="cpu", method="mixup")
    straight = train(cfg, runs_root=tmp_path / "a", progress=False)
    part = train(cfg, runs_root=tmp_path / "b", progress=False, max_epochs=1)
    first = load_checkpoint(part.run_dir / "checkpoint.pt")["scaler"]
    fresh = torch.amp.GradScaler("cpu", growth_interval=1).state_dict()
    # the scale moved off its start (scale/step/update ran), so the state carries information
    assert first is not None and first["scale"] != fresh["scale"]
    resumed = train(cfg, runs_root=tmp_path / "b", progress=False, resume=True)
    assert cpu_fp16[-1].state_dict() == load_checkpoint(resumed.run_dir /
                                                        "checkpoint.pt")["scaler"]
    ends = [load_checkpoint(r.run_dir / "checkpoint.pt")["model"] for r in (straight, resumed)]
    assert all(torch.equal(a, b) for a, b in zip(ends[0].values(), ends[1].values(),
                                                 strict=True))


def test_fp16_resume_without_the_scaler_state_would_differ(cpu_fp16, tmp_path, monkeypatch):
    """The control of the round trip above: a resume that drops the scaler's state (a
    fresh scaler) trains another model, so the equality there is evidence."""
    cfg = _cfg(amp=True, amp_dtype="fp16", device="cpu", method="mixup")
    straight = train(cfg, runs_root=tmp_path / "a", progress=False)
    train(cfg, runs_root=tmp_path / "b", progress=False, max_epochs=1)
    monkeypatch.setattr(torch.amp.GradScaler, "load_state_dict", lambda self, state: None)
    lost = train(cfg, runs_root=tmp_path / "b", progress=False, resume=True)
    ends = [load_checkpoint(r.run_dir / "checkpoint.pt")["model"] for r in (straight, lost)]
    assert not all(torch.equal(a, b) for a, b in zip(ends[0].values(), ends[1].values(),
                                                     strict=True))


# ---------------------------------------------------------------------- 14. deterministic
def test_deterministic_sets_the_switches_for_the_run_only(monkeypatch, tmp_path):
    monkeypatch.delenv(T.CUBLAS_ENV, raising=False)
    seen = []
    real_epoch = T._train_epoch

    def epoch(*args: Any, **kwargs: Any) -> Any:
        seen.append((torch.are_deterministic_algorithms_enabled(),
                     torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
                     os.environ.get(T.CUBLAS_ENV)))
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(T, "_train_epoch", epoch)
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark)
    plain = train(_cfg(), runs_root=tmp_path / "plain", progress=False)
    strict = train(_cfg(deterministic=True), runs_root=tmp_path / "strict", progress=False)
    assert seen[:2] == [(*before, None)] * 2
    assert seen[2:] == [(True, True, False, ":4096:8")] * 2
    after = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark)
    assert after == before and T.CUBLAS_ENV not in os.environ
    # not part of the name, and on the CPU it changes nothing
    assert strict.run_dir.name == plain.run_dir.name
    ends = [load_checkpoint(r.run_dir / "checkpoint.pt")["model"] for r in (plain, strict)]
    assert all(torch.equal(a, b) for a, b in zip(ends[0].values(), ends[1].values(),
                                                 strict=True))


def test_deterministic_refuses_a_non_deterministic_cublas_workspace(monkeypatch, tmp_path):
    monkeypatch.setenv(T.CUBLAS_ENV, ":0:0")
    with pytest.raises(ConfigError, match=r"CUBLAS_WORKSPACE_CONFIG.*':0:0'.*:4096:8"):
        train(_cfg(deterministic=True), runs_root=tmp_path, progress=False)
    assert not torch.are_deterministic_algorithms_enabled()
    monkeypatch.setenv(T.CUBLAS_ENV, ":16:8")  # the other deterministic setting is kept
    with T.deterministic_kernels(True):
        assert os.environ[T.CUBLAS_ENV] == ":16:8"
    assert os.environ[T.CUBLAS_ENV] == ":16:8"


# ---------------------------------------------------------------------- 13. step-time clock
def _step_time_module() -> Any:
    spec = importlib.util.spec_from_file_location("step_time", ROOT / "benchmarks" /
                                                  "step_time.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["step_time"] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["step_time"]
    return module


def test_step_time_cpu_clock_stops_before_the_closing_synchronisation(monkeypatch):
    st = _step_time_module()
    clock = SimpleNamespace(wall=0.0, cpu=0.0)

    def advance(seconds: float) -> None:
        clock.wall += seconds
        clock.cpu += seconds  # a spin: CPU time passes as fast as wall time

    monkeypatch.setattr(st, "time", SimpleNamespace(perf_counter=lambda: clock.wall,
                                                    process_time=lambda: clock.cpu))
    monkeypatch.setattr(st, "_synchronise", lambda device: advance(1.0))  # waits on the GPU
    value, wall_ms, cpu_ms = st.time_step(functools.partial(advance, 0.005),
                                          torch.device("cuda"))
    assert value is None
    assert cpu_ms == pytest.approx(5.0)  # the step's own host time
    assert wall_ms == pytest.approx(1005.0)  # the step and the wait for the device
