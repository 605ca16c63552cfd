"""crop_flip against a per-image NumPy reference, and ``augment="crop-flip"`` in the trainer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mixupe.data.augment import crop_flip
from mixupe.engine import trainer
from mixupe.engine.config import TrainConfig
from mixupe.errors import ConfigError, InputError


def _reference(x: np.ndarray, offsets: np.ndarray, coins: np.ndarray, padding: int,
               fill: np.ndarray) -> np.ndarray:
    """Pad each image with ``fill`` (per channel), slice the window, mirror if its coin says."""
    b, c, h, w = x.shape
    out = np.empty_like(x)
    for i in range(b):
        padded = np.empty((c, h + 2 * padding, w + 2 * padding), dtype=x.dtype)
        padded[:] = fill[:, None, None]
        padded[:, padding:padding + h, padding:padding + w] = x[i]
        dy, dx = offsets[i]
        window = padded[:, dy:dy + h, dx:dx + w]
        out[i] = window[:, :, ::-1] if coins[i] else window
    return out


@pytest.mark.parametrize("padding,shape", [(4, (9, 3, 8, 6)), (1, (5, 1, 3, 3)), (0, (4, 2, 5, 5))])
def test_crop_flip_equals_a_per_image_reference(padding, shape):
    x = torch.randn(*shape)
    fill = torch.randn(shape[1])
    g = torch.Generator().manual_seed(7)
    # The documented draws: two offsets in [0, 2 padding] per image, then a coin per image.
    offsets = torch.randint(2 * padding + 1, (shape[0], 2), generator=g).numpy()
    coins = (torch.rand(shape[0], generator=g) < 0.5).numpy()
    got = crop_flip(x, padding=padding, fill=fill, generator=torch.Generator().manual_seed(7))
    want = _reference(x.numpy(), offsets, coins, padding, fill.numpy())
    assert np.array_equal(got.numpy(), want)
    assert got.shape == x.shape and got.dtype == x.dtype


def test_crop_flip_without_padding_or_flip_is_the_identity_and_flip_mirrors():
    x = torch.randn(6, 2, 4, 5)
    assert torch.equal(crop_flip(x, padding=0, flip=False), x)
    out = crop_flip(x, padding=0, generator=torch.Generator().manual_seed(1))
    for i in range(len(x)):
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1))


def test_crop_flip_draws_offsets_uniformly_and_flips_half():
    """A 1 x 1 image padded by 1 stays visible only at offset (1, 1): 1/9 of 18 000 draws;
    a 1 x 2 image [1, 0] without padding is mirrored with probability 1/2."""
    g = torch.Generator().manual_seed(3)
    dot = crop_flip(torch.ones(18000, 1, 1, 1), padding=1, fill=0.0, generator=g)
    assert abs(float(dot.mean()) - 1 / 9) < 0.01
    pair = torch.tensor([1.0, 0.0]).expand(18000, 1, 1, 2)
    flipped = crop_flip(pair, padding=0, generator=g)[:, 0, 0, 0] == 0.0
    assert abs(float(flipped.double().mean()) - 0.5) < 0.015


def test_crop_flip_keeps_channels_last():
    x = torch.randn(3, 3, 6, 6).contiguous(memory_format=torch.channels_last)
    out = crop_flip(x, generator=torch.Generator().manual_seed(0))
    assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("bad,kwargs,pattern", [
    (torch.randn(3, 8, 8), {}, r"\(B, C, H, W\)"),
    (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), {}, "floating-point"),
    (torch.randn(2, 3, 4, 4), {"padding": -1}, "padding=-1"),
    (torch.randn(2, 3, 4, 4), {"fill": [0.0, 1.0]}, "one per channel"),
])
def test_crop_flip_refuses_bad_input_naming_it(bad, kwargs, pattern):
    with pytest.raises((InputError, ConfigError), match=pattern):
        crop_flip(bad, **kwargs)


def test_config_refuses_an_unknown_augment():
    with pytest.raises(ConfigError, match="augment"):
        TrainConfig(augment="flip")


def test_augment_of_non_image_data_is_refused_naming_the_fix(tmp_path):
    cfg = TrainConfig(dataset="letter", epochs=1, augment="crop-flip",
                      data_options={"subset": 200})
    with pytest.raises(ConfigError, match="augment='none'"):
        trainer.train(cfg, runs_root=tmp_path, progress=False)


def _digits(augment: str, epochs: int = 3) -> TrainConfig:
    return TrainConfig(dataset="digits", method="mixup", alpha=0.4, epochs=epochs,
                       batch_size=128, model_options={"hidden": [16]}, augment=augment)


def test_augmented_training_crops_each_batch_with_black_padding(tmp_path, monkeypatch):
    """Each training batch of an augmented run is crop_flip of the batch the plain run sees,
    padded with a black pixel in standardised units (-mean / std, computed here from the
    dataset's statistics) and drawn from the run's per-epoch augment seed."""
    from mixupe import data
    from mixupe.engine.runtime import derive_seed

    seen: dict[str, list[torch.Tensor]] = {"none": [], "crop-flip": []}
    real = trainer.optimizer_step
    for augment in seen:
        def recorded(parts, x, y, device, _log=seen[augment]):
            _log.append(x.clone())
            return real(parts, x, y, device)

        monkeypatch.setattr(trainer, "optimizer_step", recorded)
        trainer.train(_digits(augment, epochs=1), runs_root=tmp_path / augment, progress=False)
    cfg = _digits("crop-flip", epochs=1)
    stats = data.load("digits", seed=cfg.split_seed).info["standardisation"]
    mean, std = (float(np.asarray(stats[k]).reshape(-1)[0]) for k in ("mean", "std"))
    g = torch.Generator().manual_seed(derive_seed(cfg.seed, "augment", 1, 0))
    assert len(seen["none"]) == len(seen["crop-flip"]) > 1
    for plain, augmented in zip(seen["none"], seen["crop-flip"], strict=True):
        assert torch.allclose(crop_flip(plain, padding=4, fill=-mean / std, generator=g),
                              augmented)
        assert not torch.equal(plain, augmented)
    assert "aug" in cfg.run_name() and "aug" not in _digits("none").run_name()


def test_augmented_run_resumes_bit_identically(tmp_path):
    straight = trainer.train(_digits("crop-flip"), runs_root=tmp_path / "a", progress=False)
    trainer.train(_digits("crop-flip"), runs_root=tmp_path / "b", progress=False, max_epochs=1)
    resumed = trainer.train(_digits("crop-flip"), runs_root=tmp_path / "b", progress=False,
                            resume=True)

    def losses(run):
        return [json.loads(line)["train"]["loss"] for line in
                (run.run_dir / "metrics.jsonl").open()]

    assert losses(straight) == losses(resumed)
    none = trainer.train(_digits("none"), runs_root=tmp_path / "c", progress=False)
    assert losses(none) != losses(straight)  # the option changes what is trained on
