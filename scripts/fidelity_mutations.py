"""Check that the fidelity tests can fail: revert each fix of the family-fidelity work, one at
a time, in a scratch copy of ``src/``, and run the golden tests against it.

Every line of the output names a reverted fix and the tests that failed with it; a fix whose
revert fails no test is reported as ``NOT CAUGHT`` and the script exits 1.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/fidelity_mutations.py [SUBSTRING ...]

(SUBSTRING keeps only the reverts whose name contains it.) The scratch copy is a temporary
directory put first on ``PYTHONPATH``; the working tree is never edited.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_family_golden.py", "tests/test_fidelity_masks.py"]
CUTS, PUZZLE = "mixupe/functional/cuts.py", "mixupe/objectives/puzzle_mix.py"
COMIX, ALIGN = "mixupe/objectives/co_mixup.py", "mixupe/objectives/alignmix.py"
SAL, MASKED = "mixupe/functional/saliency.py", "mixupe/objectives/masked.py"

# name -> [(file under src/, exact text, replacement)]; each text must occur exactly once.
REVERTS: dict[str, list[tuple[str, str, str]]] = {
    "Puzzle Mix: raw block saliency to the transport": [
        (PUZZLE, "sal = _normalised(_block_mean(pixel_sal, t_grid))",
         "sal = _block_mean(pixel_sal, t_grid)")],
    "Puzzle Mix: seam term clamped on its own": [
        (CUTS, "w = w + (t[:, 0, 1] + t[:, 1, 0] - t[:, 0, 0] - t[:, 1, 1]) / 2",
         "w = w + ((t[:, 0, 1] + t[:, 1, 0] - t[:, 0, 0] - t[:, 1, 1]) / 2).clamp_min(0.0)")],
    "Puzzle Mix: no neigh_size pooling": [
        (CUTS, "k = neighbourhood(x_self.shape[2:], grid, neigh_size)", "k = 1")],
    "Puzzle Mix: seams in the inputs' own units": [
        (PUZZLE, "        if self.std is not None:\n", "        if False:\n"),
        (PUZZLE, "        if self.mean is not None:\n", "        if False:\n")],
    "Puzzle Mix: PyMaxflow by default": [
        (PUZZLE, 'solver: str = "gco",', 'solver: str = "maxflow",')],
    "Co-Mixup: no soft blocks": [
        (COMIX, "soft_blocks: bool = True,", "soft_blocks: bool = False,")],
    "Co-Mixup: no resolve": [(COMIX, "resolve: bool = True,", "resolve: bool = False,")],
    "Co-Mixup: PyMaxflow by default": [
        (COMIX, 'solver: str = "gco",', 'solver: str = "maxflow",')],
    "Co-Mixup: grid drawn from 2-16": [
        (COMIX, "grid_sizes: Sequence[int] = (4,),",
         "grid_sizes: Sequence[int] = (2, 4, 8, 16),")],
    "Co-Mixup: saliency in eval mode": [
        (COMIX, "train=self.saliency_train)", "train=False)")],
    "SaliencyMix: spectral residual by default": [
        (MASKED, 'saliency: str = "fine_grained",', 'saliency: str = "spectral_residual",')],
    "SaliencyMix: box side cut, not 2 floor(cut / 2)": [
        (SAL, "half = torch.floor(ratio * size).to(torch.int64) // 2",
         "half = (torch.floor(ratio * size).to(torch.int64) + 1) // 2")],
    "AlignMix: cost scaled to [0, 1]": [
        (ALIGN, "scale_cost: bool = False,", "scale_cost: bool = True,")],
    "AlignMix: always the partner aligned": [
        (ALIGN, "side = SIDES[int(torch.randint(", "side = SIDES[0 * int(torch.randint(")],
    "AlignMix: pixels aligned at the input": [
        (ALIGN, "        if plan.layer == INPUT_LAYER:\n            return plan\n", ""),
        (ALIGN, "        if layer == INPUT_LAYER:\n"
                "            return MF.mix_inputs(h, perm, lam)\n", "")],
}


def check(name: str, edits: list[tuple[str, str, str]], scratch: Path) -> list[str]:
    """The tests that fail with ``edits`` applied to a fresh copy of src/ under ``scratch``."""
    src = scratch / "src"
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(ROOT / "src", src)
    for rel, old, new in edits:
        path = src / rel
        text = path.read_text()
        if text.count(old) != 1:
            raise SystemExit(f"{name}: the text to revert occurs {text.count(old)} times in "
                             f"src/{rel} (expected once): update REVERTS in {__file__}.")
        path.write_text(text.replace(old, new))
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          *TESTS], cwd=ROOT, env=env, capture_output=True, text=True).stdout
    return sorted({line.split("::")[1].split("[")[0].split()[0]
                   for line in out.splitlines() if line.startswith(("FAILED", "ERROR"))})


def main(argv: list[str]) -> int:
    missed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, edits in REVERTS.items():
            if argv and not any(s in name for s in argv):
                continue
            failed = check(name, edits, Path(tmp))
            missed += not failed
            print(f"{name}: {', '.join(failed) if failed else 'NOT CAUGHT'}", flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
