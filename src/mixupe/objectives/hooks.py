"""Run any ``nn.Module`` with a transformation applied to the output of one named submodule.

This is the mechanism behind Manifold Mixup and behind MixupE's clean pass: a forward hook on
the named submodule replaces its output by ``fn(output)``. The name ``"input"`` means the
model's input itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from mixupe.errors import ConfigError, InputError

__all__ = ["INPUT_LAYER", "check_layer_names", "forward_with_transform"]

INPUT_LAYER = "input"


def check_layer_names(model: nn.Module, layers: tuple[str, ...]) -> None:
    """Raise :class:`ConfigError` if any name is neither ``"input"`` nor a submodule of ``model``.

    Example:
        >>> import torch
        >>> check_layer_names(torch.nn.Sequential(torch.nn.Linear(2, 2)), ("input", "0"))
    """
    names = {name for name, _ in model.named_modules() if name}
    missing = [name for name in layers if name != INPUT_LAYER and name not in names]
    if missing:
        known = sorted(names)
        shown = ", ".join(repr(n) for n in known[:20]) + (" ..." if len(known) > 20 else "")
        raise ConfigError(
            f"layer name(s) {missing} do not exist in {type(model).__name__}: use 'input' or one "
            f"of the names from model.named_modules(): {shown}."
        )


def forward_with_transform(
    model: nn.Module, x: Any, layer: str, fn: Callable[[Tensor], Tensor]
) -> Tensor:
    """Return ``model(x)`` with the output ``h`` of submodule ``layer`` replaced by ``fn(h)``.

    If the submodule runs several times in one forward (a shared block), only its first call
    is transformed. The hook is removed when the call returns or raises.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Identity(), torch.nn.Identity())
        >>> forward_with_transform(net, torch.ones(1), "0", lambda h: 2 * h).tolist()
        [2.0]
    """
    if layer == INPUT_LAYER:
        return model(fn(x))
    modules = dict(model.named_modules())
    if layer not in modules or not layer:
        check_layer_names(model, (layer,))
    state = {"calls": 0}

    def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
        state["calls"] += 1
        if state["calls"] > 1:
            return None
        if not isinstance(output, Tensor):
            raise InputError(
                f"layer {layer!r} returns {type(output).__name__}, not a tensor, so it cannot be "
                "mixed: pick a submodule whose output is a single tensor."
            )
        return fn(output)

    handle = modules[layer].register_forward_hook(hook)
    try:
        out = model(x)
    finally:
        handle.remove()
    if state["calls"] == 0:
        raise ConfigError(
            f"layer {layer!r} was not called during the forward pass of {type(model).__name__}: "
            "pick a submodule that the forward method uses."
        )
    return out
