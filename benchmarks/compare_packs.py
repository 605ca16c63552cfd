"""How each arm's numbers moved between two packs of the same suite (e.g. before and after a fix).

Reads two pack files (``mixupe pack`` output, gzip JSON) and prints, per method (the run
name's third segment) present in both: the number of seeds, the mean test accuracy with its
95 % Student-t half-width (final epoch and best-validation epoch), the change from the old
pack to the new one (paired by seed), and each pack's paired difference from a baseline
method. Runs whose entries are identical in both packs are marked "same runs".

    python benchmarks/compare_packs.py OLD.json.gz NEW.json.gz --baseline mixup-a0.5

For the family reruns of issue 19 (old: the pack committed before the fixes, in git history):

    git show 266104f:results/_packs/family--fashion-mnist-2k.json.gz > /tmp/old.json.gz
    python benchmarks/compare_packs.py /tmp/old.json.gz \
        results/_packs/family--fashion-mnist-2k.json.gz --baseline mixup-a0.5
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
from collections import defaultdict

from mixupe.engine.metrics import mean_ci, paired_diff_ci

_SEED = re.compile(r"-seed(\d+)-[0-9a-f]{6}$")


def load(path: str) -> dict[str, dict[int, dict]]:
    """``{method: {seed: run entry}}`` of a pack's finished runs.

    The method is the run name's third segment, plus any training option of the fourth that
    the common setting lacks (e.g. ``mixup-a0.5 +sam0.05`` for the G-Mix baseline).
    """
    with gzip.open(path, "rt") as f:
        runs = json.load(f)["runs"]
    out: dict[str, dict[int, dict]] = defaultdict(dict)
    for name, entry in runs.items():
        match = _SEED.search(name)
        if entry.get("status") != "complete" or match is None:
            continue
        parts = name.split("/")
        training = _SEED.sub("", parts[3])
        tail = training.split("-fevalend", 1)[1].lstrip("-") if "-fevalend" in training else ""
        method = parts[2] + (f" +{tail}" if tail else "")
        out[method][int(match.group(1))] = entry
    return out


def accuracy(entry: dict, which: str) -> float:
    result = entry["result"]
    return 100.0 * (result["test"]["acc"] if which == "final" else result["best"]["test"]["acc"])


def fmt(pair: tuple[float, float]) -> str:
    return f"{pair[0]:+6.2f} ± {pair[1]:4.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--baseline", default="mixup-a0.5",
                        help="method segment to difference against (default: mixup-a0.5)")
    args = parser.parse_args()
    old, new = load(args.old), load(args.new)
    for which in ("final", "best"):
        epoch = "final epoch" if which == "final" else "best-validation epoch"
        print(f"\n## test accuracy (%), {epoch}")
        print(f"{'method':64s} {'n':>2s} {'old':>14s} {'new':>14s} {'new - old':>15s} "
              f"{'old - base':>15s} {'new - base':>15s}")
        for method in sorted(set(old) & set(new)):
            seeds = sorted(set(old[method]) & set(new[method]))
            if len(seeds) < 2:
                continue
            a = [accuracy(old[method][s], which) for s in seeds]
            b = [accuracy(new[method][s], which) for s in seeds]
            same = all(old[method][s] == new[method][s] for s in seeds)
            row = (f"{method[:64]:64s} {len(seeds):2d} {mean_ci(a)[0]:6.2f} ± {mean_ci(a)[1]:4.2f} "
                   f"{mean_ci(b)[0]:6.2f} ± {mean_ci(b)[1]:4.2f} ")
            row += "      same runs" if same else f"{fmt(paired_diff_ci(b, a)):>15s}"
            for pack, values in ((old, a), (new, b)):
                base = pack.get(args.baseline, {})
                if method != args.baseline and all(s in base for s in seeds):
                    ref = [accuracy(base[s], which) for s in seeds]
                    row += f" {fmt(paired_diff_ci(values, ref)):>15s}"
                else:
                    row += f" {'':>15s}"
            print(row)


if __name__ == "__main__":
    main()
