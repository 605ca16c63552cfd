"""Time one epoch of mixupe.data.batches against a default-collate DataLoader.

Usage:
    .venv/bin/python benchmarks/batching.py [--dataset letter] [--batch-size 128] [--repeats 7]

Both loaders shuffle the training split of a tabular dataset and yield (x, y) batches; the
body of the loop only touches the batch (a sum), so the time is that of batching. Prints the
median over ``--repeats`` epochs of each and the ratio (target: mixupe at least 5x faster).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

import mixupe.data


def epoch_time(make_iter) -> float:
    start = time.perf_counter()
    total = 0.0
    for x, y in make_iter():
        total += float(x[0, 0]) + float(y[0])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="letter")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    ds = mixupe.data.load(args.dataset, seed=0)
    split = ds.train
    generator = torch.Generator().manual_seed(0)
    loader = DataLoader(
        TensorDataset(split.x, split.y), batch_size=args.batch_size, shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )

    def ours():
        return mixupe.data.batches(
            split, batch_size=args.batch_size, shuffle=True, generator=generator
        )

    def theirs():
        return iter(loader)

    epoch_time(ours), epoch_time(theirs)  # warm-up
    t_ours, t_theirs = [], []
    for _ in range(args.repeats):  # interleaved, so load changes hit both alike
        t_ours.append(epoch_time(ours))
        t_theirs.append(epoch_time(theirs))
    m_ours, m_theirs = statistics.median(t_ours), statistics.median(t_theirs)
    print(f"dataset {args.dataset}: {len(split)} training samples, batch {args.batch_size}, "
          f"{args.repeats} epochs each, torch threads {args.threads}")
    print(f"mixupe.data.batches       median epoch {m_ours * 1e3:8.2f} ms")
    print(f"DataLoader(TensorDataset) median epoch {m_theirs * 1e3:8.2f} ms")
    print(f"speed-up {m_theirs / m_ours:.1f}x (target >= 5x)")


if __name__ == "__main__":
    main()
