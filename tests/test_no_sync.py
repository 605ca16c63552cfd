"""The training step with validate=False, check_finite=False never reads tensor values on the host.

On the CPU this is checked by making every host read of a tensor value raise during the call
(``item``, ``bool``, ``float``, ``tolist``, ``nonzero``, and ``int`` except where noted);
with a GPU, by CUDA's synchronisation debug mode.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn

import mixupe


def gen(seed: int = 0, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


class HostRead(AssertionError):
    pass


@contextlib.contextmanager
def forbid_host_reads(*, allow_int: bool = False) -> Iterator[None]:
    names = ["item", "__bool__", "__float__", "tolist", "nonzero"]
    if not allow_int:
        names.append("__int__")
    saved = {name: getattr(torch.Tensor, name) for name in names}

    def refuse(name: str) -> Callable[..., None]:
        def method(self: torch.Tensor, *args: object, **kwargs: object) -> None:
            raise HostRead(f"Tensor.{name} called in the hot path")

        return method

    for name in names:
        setattr(torch.Tensor, name, refuse(name))
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


def cnn(batchnorm: bool) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1),
                         nn.BatchNorm2d(3) if batchnorm else nn.Identity(), nn.ReLU(),
                         nn.Flatten(), nn.Linear(3 * 6 * 5, 4))


FAST = {"num_classes": 4, "validate": False, "check_finite": False}


def objectives() -> list[tuple[str, Callable[[], object], bool]]:
    mean = torch.zeros(1, 6, 5)
    out: list[tuple[str, Callable[[], object], bool]] = [
        ("erm", lambda: mixupe.ERM(**FAST), False),
        ("mixup", lambda: mixupe.Mixup(per_sample=True, **FAST), False),
        ("cutmix", lambda: mixupe.CutMix(**FAST), False),
        # the layer index is read from the CPU generator: a host read, but no device sync
        ("manifold", lambda: mixupe.ManifoldMixup(layers=["input", "2"], **FAST), True),
        ("fmix", lambda: mixupe.FMix(per_sample=True, **FAST), False),
        ("saliencymix", lambda: mixupe.SaliencyMix(per_sample=True, **FAST), False),
        ("cutmix-minmax", lambda: mixupe.CutMix(minmax=(0.2, 0.8), **FAST), False),
        ("mixupe-fmix", lambda: mixupe.MixupE(mixing=mixupe.FMix(**FAST), validate=False,
                                              check_finite=False), False),
    ]
    for version in (1, 2, 3, 4):
        for clean_pass in ("separate", "fused"):
            for derivative in ("vjp", "jvp") if version < 3 else ("vjp",):
                def make(v=version, c=clean_pass, d=derivative):
                    obj = mixupe.MixupE(mixing=mixupe.CutMix(**FAST), version=v, clean_pass=c,
                                        derivative=d, validate=False, check_finite=False)
                    obj.set_data_mean(mean)
                    return obj

                out.append((f"mixupe-v{version}-{clean_pass}-{derivative}", make, False))
    out.append(("mixupe-manifold-v1", lambda: mixupe.MixupE(
        mixing=mixupe.ManifoldMixup(layers=["2"], **FAST), version=1, validate=False,
        check_finite=False), True))
    return out


@pytest.mark.parametrize(("name", "factory", "allow_int"), objectives(),
                         ids=[o[0] for o in objectives()])
def test_step_does_no_host_reads_on_cpu(name, factory, allow_int):
    model = cnn(batchnorm=True)
    x = torch.randn(7, 1, 6, 5, generator=gen(1))
    y = torch.randint(0, 4, (7,), generator=gen(2))
    obj = factory()
    with forbid_host_reads(allow_int=allow_int):
        out = obj(model, x, y)
        out.loss.backward()
        _ = out.stat_tensors
    assert torch.isfinite(out.loss)
    assert set(out.stats) >= {"loss"}


@pytest.mark.cuda
@pytest.mark.parametrize("version", [1, 3])
def test_step_does_not_synchronise_on_cuda(version):
    device = "cuda"
    model = cnn(batchnorm=True).to(device)
    x = torch.randn(8, 1, 6, 5, device=device)
    y = torch.randint(0, 4, (8,), device=device)
    g = gen(0, device)
    obj = mixupe.MixupE(mixing=mixupe.Mixup(generator=g, **FAST), version=version,
                        validate=False, check_finite=False)
    obj.set_data_mean(torch.zeros(1, 6, 5))
    obj(model, x, y)  # warm-up (allocations, caches)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = obj(model, x, y)
        out.loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(out.loss)
