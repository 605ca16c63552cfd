"""Speech Commands from a folder of WAV files the test writes; features against a torch STFT."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mixupe.data as D
from mixupe.data.speech_commands import clip_features
from mixupe.errors import ConfigError, CorruptDataError, DataUnavailableError

sf = pytest.importorskip("soundfile")
librosa = pytest.importorskip("librosa")

RATE = 16000
# word -> tone frequency; clips of 0.5 s, 1 s and 1.3 s test the padding and the cut.
WORDS = {"yes": 440.0, "no": 1250.0, "up": 3000.0}
LENGTHS = (0.5, 1.0, 1.3)


def tone(freq, seconds, rate=RATE, phase=0.0):
    t = np.arange(round(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def write_folder(root, *, rate=RATE):
    """3 words x 6 clips; clip 4 of each word is validation, clip 5 test."""
    signals = {}
    for word, freq in WORDS.items():
        (root / word).mkdir(parents=True)
        for k in range(6):
            signal = tone(freq, LENGTHS[k % 3], rate=rate, phase=k)
            sf.write(root / word / f"s{k}_nohash_0.wav", signal, rate, subtype="FLOAT")
            signals[f"{word}/s{k}_nohash_0.wav"] = signal
    (root / "_background_noise_").mkdir()
    sf.write(root / "_background_noise_" / "white.wav", np.zeros(3 * rate, np.float32), rate)
    (root / "validation_list.txt").write_text("".join(f"{w}/s4_nohash_0.wav\n" for w in WORDS))
    (root / "testing_list.txt").write_text("".join(f"{w}/s5_nohash_0.wav\n" for w in WORDS))
    return signals


def reference_logmel(signal, n_mels=40):
    """Independent log-mel: padded/cut signal, torch.stft power, librosa's mel filter matrix."""
    x = np.zeros(RATE, np.float32)
    x[: min(RATE, len(signal))] = signal[:RATE]
    spec = torch.stft(torch.from_numpy(x).double(), n_fft=512, hop_length=160, win_length=400,
                      window=torch.hann_window(400, periodic=True, dtype=torch.float64),
                      center=True, pad_mode="constant", return_complex=True)
    power = spec.abs().pow(2).numpy()
    mel = librosa.filters.mel(sr=RATE, n_fft=512, n_mels=n_mels) @ power
    return 10 * np.log10(np.maximum(mel, 1e-10))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("speech")
    return root, write_folder(root)


def undo(ds, split):
    """The split's features before standardisation, (N, bands, frames)."""
    info = ds.info["standardisation"]
    x = getattr(ds, split).x[:, 0].numpy().astype(np.float64)
    return x * info["std"][None, :, None] + info["mean"][None, :, None]


def test_splits_follow_the_official_lists(folder):
    root, _ = folder
    ds = D.load("speech-commands-folder", root=root)
    assert ds.info["classes"] == ["no", "up", "yes"] and ds.num_classes == 3
    assert ds.domain == "speech" and ds.input_shape == (1, 40, 101)
    files = ds.info["files"]
    assert sorted(files["val"]) == sorted(f"{w}/s4_nohash_0.wav" for w in WORDS)
    assert sorted(files["test"]) == sorted(f"{w}/s5_nohash_0.wav" for w in WORDS)
    assert len(files["train"]) == 12 and not any("_background_" in f for f in files["train"])
    for split in ("train", "val", "test"):
        labels = [ds.info["classes"].index(f.split("/")[0]) for f in files[split]]
        assert getattr(ds, split).y.tolist() == labels


def test_logmel_matches_an_independent_stft_and_pads_or_cuts_to_one_second(folder):
    root, signals = folder
    ds = D.load("speech-commands-folder", root=root)
    for split in ("train", "test"):
        got = undo(ds, split)
        for features, key in zip(got, ds.info["files"][split], strict=True):
            assert np.allclose(features, reference_logmel(signals[key]), atol=2e-3)
    # Training statistics: each band has mean 0 and std 1 over training clips and frames.
    x = ds.train.x[:, 0].double()
    assert torch.allclose(x.mean((0, 2)), torch.zeros(40, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(x.std((0, 2), correction=0), torch.ones(40, dtype=torch.float64),
                          atol=1e-3)


def test_mfcc_is_the_orthonormal_dct_of_the_log_mel(folder):
    root, signals = folder
    ds = D.load("speech-commands-folder", root=root, features="mfcc", n_mfcc=13,
                words=["yes", "no"])
    assert ds.input_shape == (1, 13, 101) and ds.info["classes"] == ["yes", "no"]
    n = np.arange(40)
    dct = np.sqrt(2 / 40) * np.cos(np.pi / 40 * (n[None, :] + 0.5) * np.arange(13)[:, None])
    dct[0] /= np.sqrt(2)
    for features, key in zip(undo(ds, "val"), ds.info["files"]["val"], strict=True):
        assert np.allclose(features, dct @ reference_logmel(signals[key]), atol=2e-2)


def test_other_sample_rates_are_resampled(tmp_path):
    signal = tone(440.0, 1.0, rate=8000, phase=1)  # clip s1 of "yes" as write_folder makes it
    features = clip_features(librosa.resample(signal, orig_sr=8000, target_sr=RATE)[None])
    write_folder(tmp_path, rate=8000)
    ds = D.load("speech-commands-folder", root=tmp_path, words=["yes", "no"])
    assert ds.input_shape == (1, 40, 101)
    # The 1 s "yes" clip s1 at 8 kHz: the reference resampled by hand gives the same features.
    row = ds.info["files"]["train"].index("yes/s1_nohash_0.wav")
    assert np.allclose(undo(ds, "train")[row], features[0], atol=2e-3)


def test_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"needs root= the unpacked Speech Commands folder"):
        D.load("speech-commands-folder")
    with pytest.raises(DataUnavailableError, match=r"does not exist.*validation_list.txt"):
        D.load("speech-commands-folder", root=tmp_path / "none")
    write_folder(tmp_path)
    with pytest.raises(ConfigError, match=r"words \['stop'\] have no folder"):
        D.load("speech-commands-folder", root=tmp_path, words=["yes", "stop"])
    with pytest.raises(ConfigError, match=r"features='spectrum' is unknown"):
        D.load("speech-commands-folder", root=tmp_path, features="spectrum")
    with pytest.raises(ConfigError, match=r"n_mfcc=50 exceeds n_mels=40"):
        D.load("speech-commands-folder", root=tmp_path, features="mfcc", n_mfcc=50)
    (tmp_path / "yes" / "s2_nohash_0.wav").write_bytes(b"RIFF....not audio")
    with pytest.raises(CorruptDataError, match=r"cannot decode .*s2_nohash_0.wav.*replace"):
        D.load("speech-commands-folder", root=tmp_path)
    (tmp_path / "testing_list.txt").unlink()
    with pytest.raises(DataUnavailableError, match=r"testing_list.txt' not found.*splits"):
        D.load("speech-commands-folder", root=tmp_path)


def test_duplicate_words_are_refused(tmp_path):
    # Issue 23.3: words=["yes", "yes"] used to give two classes of identical clips.
    write_folder(tmp_path)
    with pytest.raises(ConfigError, match=r"names \['yes'\] more than once.*list every word once"):
        D.load("speech-commands-folder", root=tmp_path, words=["yes", "yes", "no"])


def test_upper_case_wav_clips_are_read(tmp_path):
    # Issue 23.3: clips named .WAV used to be skipped silently.
    write_folder(tmp_path)
    (tmp_path / "no" / "s0_nohash_0.wav").rename(tmp_path / "no" / "s0_nohash_0.WAV")
    ds = D.load("speech-commands-folder", root=tmp_path)
    assert "no/s0_nohash_0.WAV" in ds.info["files"]["train"]
    assert len(ds.info["files"]["train"]) == 12  # 3 words x 4 training clips, as written


def test_words_from_the_command_line_are_split_on_commas(tmp_path, capsys):
    # Issue 23.3: `--option words=yes,no` used to be split into characters.
    from mixupe.cli import main

    write_folder(tmp_path)
    code = main(["data", "describe", "speech-commands-folder", "--root", str(tmp_path),
                 "--option", "words=yes,no", "--load"])
    out = capsys.readouterr().out
    assert code == 0 and "classes:       2" in out
    assert D.load("speech-commands-folder", root=tmp_path,
                  words="yes,no").info["classes"] == ["yes", "no"]


def test_non_finite_float_wav_names_the_file(tmp_path):
    # Issue 23.6: a NaN sample used to give librosa's "Audio buffer is not finite", no file.
    write_folder(tmp_path)
    signal = tone(440.0, 1.0)
    signal[100] = np.nan
    sf.write(tmp_path / "yes" / "s1_nohash_0.wav", signal, RATE, subtype="FLOAT")
    with pytest.raises(CorruptDataError, match=r"s1_nohash_0.wav' holds 1 non-finite.*replace"):
        D.load("speech-commands-folder", root=tmp_path)
