"""The mixing coefficient lambda and the pairing: Beta draws, permutations, MixupE's constant.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mixupe.errors import ConfigError

__all__ = [
    "LAMBDA_SAMPLERS",
    "check_alpha",
    "mixupe_constant",
    "sample_lambda",
    "sample_permutation",
]


def check_alpha(alpha: float) -> None:
    """Raise :class:`ConfigError` unless ``alpha`` is a finite number > 0 (not a bool).

    Example:
        >>> check_alpha(0.2)
    """
    if not (
        isinstance(alpha, (int, float))
        and not isinstance(alpha, bool)
        and math.isfinite(alpha)
        and alpha > 0
    ):
        raise ConfigError(
            f"alpha={alpha!r} is invalid: the Beta(alpha, alpha) mixing distribution needs a "
            "finite alpha > 0 (alpha=0 would silently disable mixing). Use e.g. alpha=1.0, or "
            "the ERM objective for no mixing."
        )


# Candidates per draw in Johnk's rejection sampler (alpha <= 1/2). Each is accepted with
# probability Gamma(alpha + 1)^2 / Gamma(2 alpha + 1) >= pi / 4 > 0.785, so all 32 are
# rejected with probability below 0.215 ** 32 < 1e-21; the first candidate is then used.
_JOHNK_CANDIDATES = 32


LAMBDA_SAMPLERS = ("transform", "dirichlet")


def sample_lambda(
    alpha: float,
    *,
    batch_size: int = 1,
    per_sample: bool = False,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
    method: str = "transform",
) -> Tensor:
    """Draw lambda ~ Beta(alpha, alpha) on the generator's device.

    Returns a 0-d tensor (one lambda for the batch) or, with ``per_sample=True``, a tensor of
    shape ``(batch_size,)``. Sampled in float64 from uniforms of ``generator`` alone (public
    ``torch.rand``), so a seed fixes every draw, and without any branch on drawn values (no
    host read, no device synchronisation):

    - ``alpha > 1/2``: Ulrich's (1984) exact transformation of two uniforms ``U, V``,
      ``lambda = (1 + sqrt(1 - U^(2 / (2 alpha - 1))) cos(2 pi V)) / 2`` (the first coordinate
      of a point of the unit disc whose radial density is ``(1 - r^2)^(alpha - 3/2)``);
    - ``alpha <= 1/2``: Johnk's (1964) method, ``X = U^(1/alpha)``, ``Y = V^(1/alpha)``,
      ``lambda = X / (X + Y)`` given ``X + Y <= 1``, with a fixed number of candidates (the
      first accepted one is kept; computed in logs, so tiny alphas do not underflow).

    ``method="dirichlet"`` draws as mixupe 0.1 did, through PyTorch's private
    ``torch._sample_dirichlet`` (the first coordinate of a Dirichlet(alpha, alpha)); it exists
    only to reproduce runs made with that version, since a private function may change or
    vanish between PyTorch releases.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> sample_lambda(2.0, generator=g).shape
        torch.Size([])
        >>> sample_lambda(2.0, batch_size=5, per_sample=True, generator=g).shape
        torch.Size([5])
    """
    check_alpha(alpha)
    n = batch_size if per_sample else 1
    if method == "dirichlet":
        sample_dirichlet = getattr(torch, "_sample_dirichlet", None)
        if sample_dirichlet is None:
            raise ConfigError(
                f"method='dirichlet' needs torch._sample_dirichlet, which torch "
                f"{torch.__version__} lacks; use method='transform' (runs made with the old "
                "sampler cannot be reproduced bit for bit on this PyTorch)"
            )
        conc = torch.full((n, 2), float(alpha), dtype=torch.float64, device=generator.device)
        draw = sample_dirichlet(conc, generator=generator)
        return draw[:, 0].to(dtype) if per_sample else draw[0, 0].to(dtype)
    if method != "transform":
        raise ConfigError(f"method={method!r} is not a lambda sampler; choose one of "
                          f"{LAMBDA_SAMPLERS}")
    opts = {"generator": generator, "device": generator.device, "dtype": torch.float64}
    if alpha > 0.5:
        u = torch.rand((2, n), **opts)
        # In float64, 1 - U^k keeps about 16 + log10(k) significant digits even for a tiny
        # k (a large alpha), far more than the float32 lambda needs.
        half_radius = u[0].pow_(2.0 / (2.0 * alpha - 1.0)).neg_().add_(1.0).sqrt_().mul_(0.5)
        lam = u[1].mul_(2.0 * math.pi).cos_().mul_(half_radius).add_(0.5)
    else:
        logs = (1.0 - torch.rand((2, n, _JOHNK_CANDIDATES), **opts)).log() / alpha
        accept = torch.logaddexp(logs[0], logs[1]) <= 0  # X + Y <= 1
        first = accept.to(torch.int8).argmax(dim=-1, keepdim=True)  # the first True (0 if none)
        lam = torch.sigmoid((logs[0] - logs[1]).gather(-1, first)).squeeze(-1)  # X / (X + Y)
    return lam.to(dtype) if per_sample else lam[0].to(dtype)


def sample_permutation(batch_size: int, *, generator: torch.Generator) -> Tensor:
    """A uniformly random permutation of ``range(batch_size)`` on the generator's device.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> sorted(sample_permutation(4, generator=g).tolist())
        [0, 1, 2, 3]
    """
    return torch.randperm(batch_size, generator=generator, device=generator.device)


def mixupe_constant(alpha: float) -> float:
    """``c = alpha / (2 alpha + 1)``: one minus the mean of Beta(alpha + 1, alpha).

    Example:
        >>> mixupe_constant(2.0)
        0.4
    """
    check_alpha(alpha)
    return alpha / (2.0 * alpha + 1.0)
