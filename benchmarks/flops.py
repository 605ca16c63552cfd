"""Training-step FLOPs of a model under each method, counted by torch's FLOP counter.

One step is the objective's forward and ``backward`` on a random batch (the optimiser's
update is left out: it is a few FLOPs per parameter). ``torch.utils.flop_counter`` counts
the matrix products and convolutions (the bulk of a ResNet's work; element-wise operations
are not counted). It prints the FLOPs per image of each method and the ratio to Mixup, and,
for a suite schedule, the GPU-hours at an assumed sustained throughput.

Usage::

    .venv/bin/python benchmarks/flops.py --model preact-resnet18 --width 64 \
        --shape 3 32 32 --classes 100 --batch 128 --methods mixup mixupe-v3 mixupe-v4 \
        mixup-ce erm --train 45000 --epochs 200 --tflops 10
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from mixupe import models
from mixupe.engine.config import TrainConfig
from mixupe.engine.objective import build_objective


def step_flops(method: str, *, model: str, options: dict, shape: tuple[int, ...],
               classes: int, batch: int) -> int:
    """FLOPs of one training step (forward and backward) of ``method`` on one batch."""
    name, _, version = method.partition("-v")
    cfg = TrainConfig(method=name, alpha=2.0, eta=1e-3, version=int(version or 3))
    net = models.build(model, input_shape=shape, num_classes=classes, **options)
    gen = torch.Generator().manual_seed(0)
    objective = build_objective(cfg, model=net, num_classes=classes, domain="images",
                                generator=gen)
    x = torch.randn(batch, *shape, generator=gen)
    y = torch.randint(0, classes, (batch,), generator=gen)
    counter = FlopCounterMode(display=False)
    with counter:
        out = objective(net, x, y)
        loss = out.loss if hasattr(out, "loss") else out
        loss.backward()
    return counter.get_total_flops()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="preact-resnet18")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--shape", type=int, nargs=3, default=[3, 32, 32])
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--methods", nargs="+", default=["erm", "mixup", "mixupe-v3"])
    p.add_argument("--train", type=int, default=45000, help="training images per epoch")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--tflops", type=float, default=10.0,
                   help="assumed sustained training throughput of the GPU, TFLOP/s")
    a = p.parse_args()
    options = {"width": a.width} if a.model == "preact-resnet18" else {}
    flops = {m: step_flops(m, model=a.model, options=options, shape=tuple(a.shape),
                           classes=a.classes, batch=a.batch) for m in a.methods}
    base = flops.get("mixup")
    images = a.train * a.epochs
    for m, f in flops.items():
        per_image = f / a.batch
        hours = per_image * images / (a.tflops * 1e12) / 3600
        ratio = f"{f / base:.3f}" if base else "-"
        print(f"{m:12s} {per_image / 1e9:7.3f} GFLOP/image/step  x Mixup {ratio}  "
              f"{a.epochs} epochs of {a.train}: {hours:.2f} GPU-h at {a.tflops:g} TFLOP/s")


if __name__ == "__main__":
    main()
