"""Loss objectives composing :mod:`mixupe.functional`: ERM, Mixup, CutMix, ManifoldMixup, MixupE.

Every objective is called as ``out = objective(model, x, y, lam=None, perm=None,
generator=None)`` and returns an :class:`ObjectiveOutput`.
"""

from __future__ import annotations

from mixupe.objectives.base import Mixer, MixPlan, Objective, ObjectiveOutput
from mixupe.objectives.manifold import ManifoldMixup
from mixupe.objectives.mixing import ERM, CutMix, Mixup
from mixupe.objectives.mixupe import MixupE

__all__ = [
    "ERM",
    "CutMix",
    "ManifoldMixup",
    "MixPlan",
    "Mixer",
    "Mixup",
    "MixupE",
    "Objective",
    "ObjectiveOutput",
]
