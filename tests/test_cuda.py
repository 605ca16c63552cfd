"""The CUDA paths: MixupE on a GPU against the CPU, mixed precision (bf16 and fp16) without
device synchronisation, channels_last, and the GPU generator. Skipped without a CUDA device;
`benchmarks/gpu_check.sh` runs them (with the CUDA no-sync test of test_no_sync.py).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import mixupe
from mixupe import functional as MF

pytestmark = pytest.mark.cuda  # skipped without a CUDA device (tests/conftest.py)

K = 4
FAST = {"num_classes": K, "validate": False, "check_finite": False}


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, K))


def batch(device: str, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 3, 8, 8, generator=g, dtype=dtype)
    y = torch.randint(0, K, (16,), generator=g)
    return x.to(device), y.to(device)


def objective(version: int, clean_pass: str = "separate", **mixing: object) -> mixupe.MixupE:
    obj = mixupe.MixupE(mixing=mixupe.Mixup(alpha=2.0, **FAST, **mixing), version=version,
                        eta=0.5, clean_pass=clean_pass, validate=False, check_finite=False)
    obj.set_data_mean(torch.zeros(3, 8, 8))
    return obj


@pytest.mark.parametrize("version", [1, 2, 3, 4])
@pytest.mark.parametrize("clean_pass", ["separate", "fused"])
def test_mixupe_on_cuda_equals_the_cpu(version, clean_pass):
    """float64, the same lambda, pairing and weights: loss, gradients, BatchNorm statistics."""
    base = cnn().double()
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(2))
    results = {}
    for device in ("cpu", "cuda"):
        net = copy.deepcopy(base).to(device)
        x, y = batch(device, torch.float64)
        out = objective(version, clean_pass)(net, x, y, lam=0.3, perm=perm.to(device))
        out.loss.backward()
        results[device] = [out.loss.detach()] + [p.grad for p in net.parameters()] + \
            list(net.buffers())
    for a, b in zip(results["cpu"], results["cuda"], strict=True):
        torch.testing.assert_close(a, b.cpu(), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("amp_dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("version", [1, 3])
def test_amp_step_is_finite_and_never_synchronises(amp_dtype, version):
    net = cnn().cuda()
    x, y = batch("cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    obj = objective(version, generator=g)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    for step in range(3):  # the first step warms caches up; the later ones are checked
        opt.zero_grad()
        if step > 0:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
        try:
            with torch.autocast("cuda", dtype=amp_dtype):
                out = obj(net, x, y)
            scaler.scale(out.loss).backward()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        scaler.step(opt)  # the scaler reads its inf check on the host: outside the check
        scaler.update()
        assert out.logits.dtype == amp_dtype and out.loss.dtype == torch.float32
        assert torch.isfinite(out.loss)
        assert all(torch.isfinite(p).all() for p in net.parameters())


@pytest.fixture
def no_tf32():
    """Full float32 convolutions: TF32 (cuDNN's default) differs by ~1e-3 between layouts."""
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = before


@pytest.mark.parametrize("version", [1, 3])
def test_channels_last_gives_the_contiguous_result(version, no_tf32):
    base = cnn()
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(2)).cuda()
    results = []
    for memory_format in (torch.contiguous_format, torch.channels_last):
        net = copy.deepcopy(base).cuda().to(memory_format=memory_format)
        x, y = batch("cuda")
        x = x.contiguous(memory_format=memory_format)
        out = objective(version)(net, x, y, lam=0.3, perm=perm)
        out.loss.backward()
        results.append([out.loss.detach()] + [p.grad for p in net.parameters()])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_cuda_generator_draws_are_reproducible_and_distributed_as_beta():
    from scipy import stats

    draws = [MF.sample_lambda(2.0, batch_size=20000, per_sample=True,
                              generator=torch.Generator(device="cuda").manual_seed(3),
                              dtype=torch.float64) for _ in range(2)]
    assert draws[0].device.type == "cuda" and torch.equal(draws[0], draws[1])
    assert stats.kstest(draws[0].cpu().numpy(), stats.beta(2.0, 2.0).cdf).pvalue > 1e-3
    small = MF.sample_lambda(0.2, batch_size=20000, per_sample=True,
                             generator=torch.Generator(device="cuda").manual_seed(4),
                             dtype=torch.float64)
    assert stats.kstest(small.cpu().numpy(), stats.beta(0.2, 0.2).cdf).pvalue > 1e-3
