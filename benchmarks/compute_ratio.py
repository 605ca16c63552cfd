"""The step-time ratio of one suite arm to another, per dataset: what `equal_compute` uses.

For each dataset label it takes the first grid point of both arms (the cost of a step does
not depend on alpha or eta), and times each with a short and a long run (``--epochs SHORT
LONG``), ``--repeats`` times, interleaved: training CPU seconds per step as the difference
quotient of the two runs' process CPU time over their steps (setup, data loading and the
end-of-run evaluation cancel; see :mod:`mixupe.bench.compute`). It prints the median ratio
and a line to paste into the suite's ``equal_compute.ratio`` table.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/compute_ratio.py --suite scale \
        --datasets letter-2k fashion-mnist-2k --arm "MixupE v3 (sign -1, released)" \
        --base Mixup --epochs 2 12 --repeats 5 --threads 1
"""

from __future__ import annotations

import argparse
import os

import torch

from mixupe.bench.compute import measure_step_ratio
from mixupe.bench.suites import expand, load_suite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", required=True)
    parser.add_argument("--datasets", nargs="+", required=True, metavar="LABEL")
    parser.add_argument("--arm", required=True, help="the dearer arm (numerator)")
    parser.add_argument("--base", required=True, help="the arm it is compared with")
    parser.add_argument("--epochs", type=int, nargs=2, default=[2, 10], metavar=("SHORT", "LONG"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    plans = {(p.dataset, p.arm): p for p in expand(load_suite(args.suite))}
    ratios = {}
    print(f"load average {os.getloadavg()[0]:.1f}, torch {torch.__version__}, "
          f"{args.threads} thread(s), {args.epochs[0]} and {args.epochs[1]} epochs x "
          f"{args.repeats} repeats, CPU time")
    for label in args.datasets:
        missing = [a for a in (args.arm, args.base) if (label, a) not in plans]
        if missing:
            parser.error(f"suite {args.suite!r} has no cell {label!r} x {missing}")
        cfg_a = next(iter(plans[(label, args.arm)].points[0].configs.values()))
        cfg_b = next(iter(plans[(label, args.base)].points[0].configs.values()))
        got = measure_step_ratio(cfg_a, cfg_b, epochs=tuple(args.epochs), repeats=args.repeats)
        ms_a = ", ".join(f"{1e3 * s:.2f}" for s in got.seconds_a)
        ms_b = ", ".join(f"{1e3 * s:.2f}" for s in got.seconds_b)
        per = ", ".join(f"{r:.3f}" for r in got.per_repeat)
        print(f"{label}: {args.arm} ms/step [{ms_a}], {args.base} ms/step [{ms_b}], "
              f"ratio per repeat [{per}], median {got.ratio:.3f}")
        ratios[cfg_a.dataset] = round(got.ratio, 2)
    print("ratio = { " + ", ".join(f'"{k}" = {v}' for k, v in ratios.items()) + " }")


if __name__ == "__main__":
    main()
