"""The mixed loss on hard labels: dense soft targets against the index form.

Times forward + backward of the mixed cross-entropy on fixed logits, two ways:

- ``dense``: one-hot targets mixed with lambda, then cross-entropy against probabilities
  (what ``soft_cross_entropy`` / ``F.cross_entropy(logits, probs)`` computes);
- ``index``: ``lam CE(y) + (1 - lam) CE(y[perm])`` on class indices
  (:func:`mixupe.functional.mixed_cross_entropy`, the objectives' path for class indices).

Both are checked to agree (value and gradient) before timing. Prints the median time per step
of each, and their ratio, per (batch, classes) shape:

    .venv/bin/python benchmarks/loss_path.py --threads 1
    .venv/bin/python benchmarks/loss_path.py --device cuda       # on a GPU (gpu_check.sh)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mixupe import functional as MF


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shapes", nargs="+", default=["256x100", "256x1000", "1024x1000"],
                        help="BATCHxCLASSES")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    return parser.parse_args(argv)


def _losses(logits, y, perm, lam):
    k = logits.shape[1]

    def dense():
        targets = MF.mix_targets(y, perm, lam, num_classes=k)
        return MF.soft_cross_entropy(logits, targets)

    def index():
        return MF.mixed_cross_entropy(logits, y, y[perm], lam)

    return {"dense": dense, "index": index}


def _time(fn, logits, steps, warmup, device) -> float:
    times = []
    for i in range(warmup + steps):
        logits.grad = None
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}")
    print("| batch x classes | dense ms | index ms | dense / index |")
    print("|---|---|---|---|")
    for shape in args.shapes:
        b, k = (int(v) for v in shape.split("x"))
        g = torch.Generator().manual_seed(0)
        logits = torch.randn(b, k, generator=g).to(device).requires_grad_()
        y = torch.randint(0, k, (b,), generator=g).to(device)
        perm = torch.randperm(b, generator=g).to(device)
        lam = torch.tensor(0.3, device=device)
        fns = _losses(logits, y, perm, lam)
        values = {name: fn() for name, fn in fns.items()}
        grads = {name: torch.autograd.grad(v, logits)[0] for name, v in values.items()}
        torch.testing.assert_close(values["dense"], values["index"])
        torch.testing.assert_close(grads["dense"], grads["index"])
        ms = {name: 1e3 * _time(fn, logits, args.steps, args.warmup, device)
              for name, fn in fns.items()}
        print(f"| {b} x {k} | {ms['dense']:.3f} | {ms['index']:.3f} | "
              f"{ms['dense'] / ms['index']:.2f} |")


if __name__ == "__main__":
    main()
