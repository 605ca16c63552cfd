"""Google Speech Commands from a user's folder, as log-mel spectrograms or MFCCs.

Layout (that of the unpacked ``speech_commands_v0.0x.tar.gz``): ``root/<word>/<clip>.wav``,
plus ``root/validation_list.txt`` and ``root/testing_list.txt``, which name the clips
(``word/clip.wav``, one per line) of the official validation and test splits; every other clip
is training data. ``_background_noise_`` (long noise recordings) is not a class and is skipped.
Each word folder is a class (``words=`` keeps some of them, in the order given: a list, or
one comma-separated string such as ``words=yes,no`` on the command line). Clips end in
``.wav`` in any letter case.

Each clip is read with ``soundfile``, averaged to mono, resampled to ``sample_rate`` when it
differs (``librosa``/soxr), and padded with zeros at the end or cut to exactly 1 s. Features
(``librosa``): a power mel spectrogram over 25 ms Hann windows with a 10 ms hop (centred frames,
so 101 frames per second), ``n_mels`` bands, in decibels (``10 log10 max(S, 1e-10)``);
``features="mfcc"`` takes the first ``n_mfcc`` DCT-II (orthonormal) coefficients of those
decibels. Inputs are (1, bands, 101), standardised per band with statistics of the training
clips' frames.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mixupe.data.splits import (
    Dataset,
    Standardiser,
    check_finite,
    stratified_subset,
    tensor_split,
)
from mixupe.errors import ConfigError, CorruptDataError, DataUnavailableError

__all__ = ["clip_features", "fix_length", "load_speech_commands_folder"]

AUDIO_INSTALL = "pip install soundfile librosa"
BACKGROUND = "_background_noise_"
LISTS = ("validation_list.txt", "testing_list.txt")
WINDOW_S, HOP_S = 0.025, 0.010


def _audio_modules() -> tuple[Any, Any]:
    try:
        import librosa
        import soundfile
    except ImportError as exc:
        raise DataUnavailableError(
            f"Speech Commands needs soundfile and librosa; install them with `{AUDIO_INSTALL}`"
        ) from exc
    return soundfile, librosa


def fix_length(signal: np.ndarray, length: int) -> np.ndarray:
    """Pad with zeros at the end, or cut, to exactly ``length`` samples.

    Example:
        >>> fix_length(np.ones(3), 5).tolist(), fix_length(np.arange(6.0), 4).tolist()
        ([1.0, 1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 2.0, 3.0])
    """
    out = np.zeros(length, dtype=np.float32)
    keep = min(length, signal.shape[0])
    out[:keep] = signal[:keep]
    return out


def clip_features(
    clips: np.ndarray,
    *,
    sample_rate: int = 16000,
    features: str = "logmel",
    n_mels: int = 40,
    n_mfcc: int = 40,
) -> np.ndarray:
    """(N, samples) clips -> (N, bands, frames) log-mel decibels or MFCCs (float32).

    Example:
        >>> tone = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)[None]
        >>> clip_features(tone).shape
        (1, 40, 101)
    """
    _, librosa = _audio_modules()
    window, hop = round(WINDOW_S * sample_rate), round(HOP_S * sample_rate)
    n_fft = 1 << (window - 1).bit_length()  # next power of two >= the window
    out = []
    for start in range(0, clips.shape[0], 512):
        power = librosa.feature.melspectrogram(
            y=clips[start:start + 512], sr=sample_rate, n_fft=n_fft, win_length=window,
            hop_length=hop, window="hann", center=True, pad_mode="constant", power=2.0,
            n_mels=n_mels,
        )
        db = librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=None)
        if features == "mfcc":
            db = librosa.feature.mfcc(S=db, n_mfcc=n_mfcc, dct_type=2, norm="ortho")
        out.append(db.astype(np.float32))
    return np.concatenate(out) if out else np.zeros((0, n_mels, 0), np.float32)


def _read_list(root: Path, name: str) -> set[str]:
    path = root / name
    if not path.is_file():
        raise DataUnavailableError(
            f"{str(path)!r} not found: Speech Commands needs root/validation_list.txt and "
            "root/testing_list.txt (shipped in the official archive) to define its splits"
        )
    return {line.strip().replace("\\", "/") for line in path.read_text().splitlines()
            if line.strip()}


def _read_clip(soundfile: Any, librosa: Any, path: Path, sample_rate: int) -> np.ndarray:
    try:
        signal, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, OSError, ValueError) as exc:  # soundfile.LibsndfileError is one
        raise CorruptDataError(
            f"cannot decode {str(path)!r} ({exc}); delete or replace the file"
        ) from exc
    if not np.isfinite(signal).all():
        bad = int((~np.isfinite(signal)).sum())
        raise CorruptDataError(
            f"{str(path)!r} holds {bad} non-finite samples (NaN or inf; a float WAV can); "
            "delete or replace the file, or re-export it with finite samples"
        )
    mono = signal.mean(axis=1)
    if rate != sample_rate:
        mono = librosa.resample(mono, orig_sr=rate, target_sr=sample_rate, res_type="soxr_hq")
    return fix_length(mono, sample_rate)


def _classes(folder: Path, words: Any) -> list[str]:
    """The class words: ``words`` (a sequence, or one comma-separated string as the command
    line passes it) in the order given, or every word folder of ``folder`` sorted."""
    found = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name != BACKGROUND)
    if isinstance(words, str):
        words = [w.strip() for w in words.split(",") if w.strip()]
    classes = [str(w) for w in words] if words is not None else found
    repeated = sorted({w for w in classes if classes.count(w) > 1})
    if repeated:
        raise ConfigError(
            f"words={classes} names {repeated} more than once; each word is one class, so "
            "list every word once"
        )
    missing = sorted(set(classes) - set(found))
    if missing:
        raise ConfigError(f"words {missing} have no folder in {str(folder)!r}; it has {found}")
    if len(classes) < 2:
        raise ConfigError(
            f"Speech Commands in {str(folder)!r} gives classes {classes}; a classifier needs two "
            "word folders or more"
        )
    return classes


def _split_files(folder: Path, classes: list[str], validation: set[str],
                 testing: set[str]) -> dict[str, list[tuple[str, int]]]:
    """(``word/clip``, label) of every clip (``.wav`` in any case), by official split."""
    files: dict[str, list[tuple[str, int]]] = {"train": [], "val": [], "test": []}
    for label, word in enumerate(classes):
        clips = (p for p in (folder / word).iterdir() if p.is_file() and p.suffix.lower() == ".wav")
        for path in sorted(clips):
            key = f"{word}/{path.name}"
            split = "test" if key in testing else "val" if key in validation else "train"
            files[split].append((key, label))
    for split, items in files.items():
        if not items:
            raise DataUnavailableError(
                f"the {split} split of {str(folder)!r} is empty: check validation_list.txt and "
                "testing_list.txt against the .wav files"
            )
    return files


def load_speech_commands_folder(
    *,
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    words: tuple[str, ...] | list[str] | str | None = None,
    features: str = "logmel",
    n_mels: int = 40,
    n_mfcc: int = 40,
    sample_rate: int = 16000,
    subset: int | None = None,
) -> Dataset:
    """Speech Commands from ``root`` with its official splits; see the module docstring.

    ``subset`` keeps a stratified random training subset of that size (drawn with ``seed``).
    """
    folder = _checked_folder(root, features, n_mels, n_mfcc, sample_rate)
    soundfile, librosa = _audio_modules()
    validation, testing = (_read_list(folder, name) for name in LISTS)
    classes = _classes(folder, words)
    files = _split_files(folder, classes, validation, testing)
    train_labels = np.array([label for _, label in files["train"]], dtype=np.int64)
    if subset is not None:
        keep = stratified_subset(train_labels, subset, seed=seed)
        files["train"] = [files["train"][i] for i in keep]

    def featurise(items: list[tuple[str, int]]) -> tuple[np.ndarray, np.ndarray]:
        clips = np.stack([_read_clip(soundfile, librosa, folder / key, sample_rate)
                          for key, _ in items])
        x = clip_features(clips, sample_rate=sample_rate, features=features, n_mels=n_mels,
                          n_mfcc=n_mfcc)
        return x[:, None], np.array([label for _, label in items], dtype=np.int64)

    arrays = {split: featurise(items) for split, items in files.items()}
    check_finite("speech-commands-folder", arrays["train"][0], str(folder))
    scaler = Standardiser.fit(arrays["train"][0], axes=(0, 1, 3))
    splits = {k: tensor_split(scaler.apply(x), y) for k, (x, y) in arrays.items()}
    return Dataset(
        name="speech-commands-folder",
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        num_classes=len(classes),
        domain="speech",
        input_shape=tuple(int(d) for d in arrays["train"][0].shape[1:]),
        source=str(folder),
        info={
            "classes": classes,
            "files": {k: [key for key, _ in v] for k, v in files.items()},
            "standardisation": {"mean": scaler.mean.squeeze(), "std": scaler.std.squeeze()},
            "features": features,
        },
    )


def _checked_folder(root: str | os.PathLike[str] | None, features: str, n_mels: int,
                    n_mfcc: int, sample_rate: int) -> Path:
    """The Speech Commands folder ``root``, after checking the feature options."""
    if root is None:
        raise ConfigError(
            "speech-commands-folder needs root= the unpacked Speech Commands folder "
            "(root/<word>/<clip>.wav, root/validation_list.txt, root/testing_list.txt)"
        )
    if features not in ("logmel", "mfcc"):
        raise ConfigError(f"features={features!r} is unknown: use 'logmel' or 'mfcc'")
    for name, value in (("n_mels", n_mels), ("n_mfcc", n_mfcc), ("sample_rate", sample_rate)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}={value!r} must be a positive integer")
    if features == "mfcc" and n_mfcc > n_mels:
        raise ConfigError(f"n_mfcc={n_mfcc} exceeds n_mels={n_mels}: lower n_mfcc or raise n_mels")
    folder = Path(root)
    if not folder.is_dir():
        raise DataUnavailableError(
            f"Speech Commands folder {str(folder)!r} does not exist; pass root= the unpacked "
            "archive (root/<word>/<clip>.wav with validation_list.txt and testing_list.txt)"
        )
    return folder
