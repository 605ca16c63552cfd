"""Loss objectives composing the functional layers: ERM, the mixers, MixupE and RegMixup.

Every objective is called as ``out = objective(model, x, y, lam=None, perm=None,
generator=None)`` and returns an :class:`ObjectiveOutput`.
"""

from __future__ import annotations

from mixupe.objectives.alignmix import AlignMix
from mixupe.objectives.base import MixPlan, Objective, ObjectiveOutput
from mixupe.objectives.co_mixup import CoMixup
from mixupe.objectives.control import MixupCleanCE
from mixupe.objectives.manifold import ManifoldMixup
from mixupe.objectives.masked import FMix, ResizeMix, SaliencyMix
from mixupe.objectives.mixer import Mixer
from mixupe.objectives.mixing import ERM, CutMix, Mixup
from mixupe.objectives.mixupe import MixupE
from mixupe.objectives.puzzle_mix import PuzzleMix
from mixupe.objectives.regmixup import RegMixup
from mixupe.objectives.scheduling import Scheduled, Switch

__all__ = [
    "ERM",
    "AlignMix",
    "CoMixup",
    "CutMix",
    "FMix",
    "ManifoldMixup",
    "MixPlan",
    "Mixer",
    "Mixup",
    "MixupCleanCE",
    "MixupE",
    "Objective",
    "ObjectiveOutput",
    "PuzzleMix",
    "RegMixup",
    "ResizeMix",
    "SaliencyMix",
    "Scheduled",
    "Switch",
]
