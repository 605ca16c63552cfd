"""How often Puzzle Mix gives lam in {0, 1} and Co-Mixup an output from one input (issue 19).

The family suite's setting (Fashion-MNIST, 2000 training images, the 3-block small CNN) and
mixer options (grid_sizes 2, 4, 7, 14; alpha 0.5; Dirichlet lambda sampler; GCO solver),
with the CNN first trained briefly as ERM (``--epochs`` of SGD at the suite's lr), then
``--batches`` training batches of 64 mixed by each mixer (model in train mode, as in
training). Prints the counts.

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 15 python benchmarks/saliency_degenerate.py
"""

from __future__ import annotations

import argparse
import time

import torch

from mixupe import data
from mixupe.engine.config import TrainConfig
from mixupe.engine.objective import build_objective
from mixupe.engine.trainer import build_model

SETTING = dict(dataset="fashion-mnist", model="small-cnn",
               model_options={"channels": [16, 32, 64]},
               data_options={"subset": 2000, "val_fraction": 0.02}, batch_size=64,
               alpha=0.5, lambda_sampler="dirichlet", mixer_options={"grid_sizes": [2, 4, 7, 14]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    cfg = TrainConfig(method="erm", **SETTING)
    ds = data.load(cfg.dataset, seed=cfg.split_seed, **dict(cfg.data_options))
    model = build_model(cfg, ds)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x_all, y_all = ds.train.x, ds.train.y
    gen = torch.Generator().manual_seed(args.seed)
    start = time.process_time()
    for _ in range(args.epochs):
        order = torch.randperm(len(y_all), generator=gen)
        for i in range(0, len(order) - 63, 64):
            idx = order[i:i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x_all[idx]), y_all[idx]).backward()
            opt.step()
    with torch.no_grad():
        acc = (model(ds.test.x).argmax(1) == ds.test.y).float().mean().item()
    print(f"ERM CNN after {args.epochs} epochs on {len(y_all)} images: test acc {acc:.3f} "
          f"({time.process_time() - start:.0f} s CPU)")
    order = torch.randperm(len(y_all), generator=gen)[: 64 * args.batches]
    for method in ("puzzlemix", "comixup"):
        t0 = time.process_time()
        mixer = build_objective(TrainConfig(method=method, **SETTING), model=model,
                                num_classes=ds.num_classes, domain=ds.domain,
                                generator=torch.Generator().manual_seed(args.seed))
        lams = []
        for b in range(args.batches):
            idx = order[64 * b: 64 * (b + 1)]
            out = mixer(model, x_all[idx], y_all[idx])
            lam = out.lam.detach().reshape(-1).expand(64)
            lams.append(lam)
        lam = torch.cat(lams)
        degenerate = int(((lam == 0) | (lam == 1)).sum())
        what = "lam in {0,1}" if method == "puzzlemix" else "from a single input (lam == 1)"
        per_batch = [int(((v == 0) | (v == 1)).sum()) for v in lams]
        print(f"{method}: {degenerate}/{lam.numel()} samples {what}; per batch of 64 "
              f"{per_batch}; lam mean {lam.mean():.3f} ({time.process_time() - t0:.0f} s CPU)")


if __name__ == "__main__":
    main()
