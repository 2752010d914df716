"""Event-free audio for open-set training: the model learns to say "nothing of mine is here".

A live tagger spends most of its time on audio that holds none of its classes: silence, room and
machine noise, people talking. A classifier trained only on its classes has no way to say so and
tags something on every window (an ESC-10 model tagged "Person sneeze" on digital silence). Three
pieces fix that, all drawn from a :class:`BackgroundBank` of event-free audio:

- :class:`BackgroundDataset`: training items that are pure background, with the "nothing" target
  (the background class of a single-label model);
- :class:`MixBackground`: a waveform augmentation that lays a target excerpt over a background at
  a random SNR (0–20 dB by default), so events are recognised inside real beds;
- :func:`sounding_span`: where a clip actually sounds, so that training crops of clips padded with
  digital silence hold some of the event (a silent crop labelled "Dog bark" teaches the model that
  silence is a dog bark).

The bank's kinds (:data:`KINDS`): ``silence`` (digital zeros, or a microphone's self-noise at
−100…−70 dBFS), ``noise`` (white, pink or brown noise at −60…−20 dBFS RMS), ``speech`` (recorded
speech, by default the bundled FSDD speakers of :data:`SPEECH_SPEAKERS` ``["train"]`` for a
model that does not classify speech) and ``recorded`` (the user's own recordings of the
deployment site, ``qedge train --background DIR``).

Randomness comes from the ``torch.Generator`` the training pipeline passes (or torch's global
RNG, which the loop re-seeds per epoch), so a run is reproducible and resumable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from qedge.errors import QedgeError
from qedge.runtime.features import FeatureConfig, LogMelDeltas

__all__ = [
    "KINDS",
    "NOISE_COLORS",
    "SPEECH_SPEAKERS",
    "BACKGROUND_LABEL",
    "colored_noise",
    "scale_to_dbfs",
    "rms_dbfs",
    "sounding_span",
    "bed_gain",
    "BackgroundBank",
    "MixBackground",
    "BackgroundDataset",
    "open_set_labels",
    "training_bank",
    "OPEN_SET_DEFAULTS",
    "open_set_settings",
    "with_negatives",
    "read_recordings",
    "speech_recordings",
]

#: Kinds of event-free audio, in the order reports list them.
KINDS = ("silence", "noise", "speech", "recorded")
#: Spectral slopes of the generated noise: power ∝ f^(−β), β = 0 (white), 1 (pink), 2 (brown).
NOISE_COLORS = {"white": 0.0, "pink": 1.0, "brown": 2.0}
#: The bundled FSDD speakers by use, kept apart so no figure is measured on audio it was tuned on:
#: negatives in training, negatives when thresholds are chosen, negatives of the stream evaluation.
SPEECH_SPEAKERS = {"train": ("george", "jackson", "lucas"), "tune": ("theo",), "test": ("yweweler",)}
#: Name of the background class of a single-label open-set model (its "nothing of mine" output).
BACKGROUND_LABEL = "background"
#: How much open-set data training adds: event-free items per training clip (``negatives``),
#: probability of laying an event over a bed (``mix_p``) and the SNR range of that (``mix_snr_db``).
OPEN_SET_DEFAULTS = {"negatives": 0.5, "mix_p": 0.5, "mix_snr_db": (0.0, 20.0)}

_AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")


def _rng(generator: torch.Generator | None) -> np.random.Generator:
    """A numpy generator seeded from torch's (so one torch seed drives everything)."""
    return np.random.default_rng(int(torch.randint(0, 2**62, (), generator=generator).item()))


def colored_noise(n: int, beta: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of Gaussian noise with power spectrum ∝ f^(−β), scaled to unit RMS.

    White Gaussian noise is shaped in the frequency domain by f^(−β/2) (the DC bin is zeroed).
    """
    white = rng.standard_normal(n)
    if beta:
        spectrum = np.fft.rfft(white)
        f = np.fft.rfftfreq(n)
        f[0] = f[1] if n > 1 else 1.0
        spectrum *= f ** (-beta / 2.0)
        spectrum[0] = 0.0
        white = np.fft.irfft(spectrum, n)
    rms = float(np.sqrt(np.mean(white**2)))
    return (white / rms if rms > 0 else white).astype(np.float32)


def rms_dbfs(wave: np.ndarray) -> float:
    """RMS level in dB relative to full scale (RMS 1.0); −inf for all zeros."""
    p = float(np.mean(np.square(wave, dtype=np.float64))) if wave.size else 0.0
    return 10.0 * np.log10(p) if p > 0 else float("-inf")


def scale_to_dbfs(wave: np.ndarray, dbfs: float) -> np.ndarray:
    """``wave`` scaled to an RMS level of ``dbfs`` dB (full scale = RMS 1.0); zeros stay zeros."""
    level = rms_dbfs(wave)
    if not np.isfinite(level):
        return wave.astype(np.float32, copy=True)
    return (wave * np.float32(10.0 ** ((dbfs - level) / 20.0))).astype(np.float32)


def sounding_span(wave: np.ndarray, floor_db: float = 60.0, frame: int = 320) -> tuple[int, int]:
    """[a, b): from the first to the last frame (``frame`` samples) whose energy is within
    ``floor_db`` dB of the loudest frame — where the clip sounds, without its digital-silence
    padding or near-silent head and tail. A silent clip gives (0, 0)."""
    n = wave.shape[0] // frame
    if n == 0:
        return (0, int(wave.shape[0])) if np.any(wave) else (0, 0)
    energy = np.mean(np.square(wave[: n * frame].reshape(n, frame), dtype=np.float64), axis=1)
    if energy.max() <= 0.0:
        return (0, 0)
    loud = np.flatnonzero(energy >= energy.max() * 10.0 ** (-floor_db / 10.0))
    return int(loud[0] * frame), int(min(wave.shape[0], (loud[-1] + 1) * frame))


def bed_gain(p_event: float, p_bed: float, snr_db: float) -> float:
    """Gain a for a bed of mean power ``p_bed`` under an event of mean power ``p_event`` so that
    10·log10(p_event / (a²·p_bed)) = ``snr_db``; 0 when either is silent (nothing to scale)."""
    if p_event <= 0 or p_bed <= 0:
        return 0.0
    return float(np.sqrt(p_event / (p_bed * 10.0 ** (snr_db / 10.0))))


@dataclass
class BackgroundBank:
    """Event-free audio at one sample rate: generated silence and noise, plus recordings.

    speech / recorded: lists of mono float32 waveforms at ``sample_rate``. weights: relative
    probability of each kind in :meth:`excerpt` (kinds without audio are skipped).
    """

    sample_rate: int
    speech: list[np.ndarray]
    recorded: list[np.ndarray]
    weights: dict[str, float]

    @classmethod
    def build(cls, sample_rate: int, speech: Sequence[np.ndarray] = (), recorded: Sequence[np.ndarray] = (),
              weights: dict[str, float] | None = None) -> "BackgroundBank":
        w = {"silence": 0.25, "noise": 0.35, "speech": 0.4, "recorded": 0.4, **(weights or {})}
        return cls(int(sample_rate), [np.asarray(s, np.float32) for s in speech if len(s)],
                   [np.asarray(r, np.float32) for r in recorded if len(r)], w)

    @property
    def kinds(self) -> list[str]:
        """The kinds this bank can produce."""
        have = {"silence": True, "noise": True, "speech": bool(self.speech), "recorded": bool(self.recorded)}
        return [k for k in KINDS if have[k] and self.weights.get(k, 0.0) > 0]

    def describe(self) -> dict[str, object]:
        return {"kinds": self.kinds, "speech_recordings": len(self.speech),
                "recorded_files": len(self.recorded), "weights": {k: self.weights[k] for k in self.kinds}}

    def excerpt(self, n: int, generator: torch.Generator | None = None,
                kinds: Sequence[str] | None = None) -> tuple[np.ndarray, str]:
        """``n`` samples of event-free audio and its kind, drawn from ``kinds`` (default: all)."""
        rng = _rng(generator)
        choices = [k for k in (kinds or self.kinds) if k in self.kinds]
        if not choices:
            raise QedgeError(f"the background bank has none of the kinds {list(kinds or [])}")
        p = np.array([self.weights[k] for k in choices], dtype=np.float64)
        kind = choices[int(rng.choice(len(choices), p=p / p.sum()))]
        return self.render(kind, n, rng), kind

    def render(self, kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` samples of one kind (levels and colours drawn from ``rng``)."""
        if kind == "silence":
            if rng.random() < 0.5:
                return np.zeros(n, dtype=np.float32)
            return scale_to_dbfs(colored_noise(n, 0.0, rng), rng.uniform(-100.0, -70.0))
        if kind == "noise":
            beta = list(NOISE_COLORS.values())[int(rng.integers(len(NOISE_COLORS)))]
            return scale_to_dbfs(colored_noise(n, beta, rng), rng.uniform(-60.0, -20.0))
        if kind == "speech":
            wave = _fill(self.speech, n, rng, gap_s=(0.05, 0.4), sample_rate=self.sample_rate)
            floor = scale_to_dbfs(colored_noise(n, 1.0, rng), rng.uniform(-90.0, -60.0))
            return scale_to_dbfs(wave, rng.uniform(-40.0, -15.0)) + floor
        if kind == "recorded":
            rec = self.recorded[int(rng.integers(len(self.recorded)))]
            start = int(rng.integers(max(1, rec.shape[0])))
            reps = int(np.ceil((start + n) / rec.shape[0]))
            wave = np.tile(rec, reps)[start: start + n]
            return (wave * np.float32(10.0 ** (rng.uniform(-6.0, 6.0) / 20.0))).astype(np.float32)
        raise QedgeError(f"unknown background kind {kind!r} (one of {', '.join(KINDS)})")


def _fill(recordings: Sequence[np.ndarray], n: int, rng: np.random.Generator, gap_s: tuple[float, float],
          sample_rate: int) -> np.ndarray:
    """Recordings laid end to end (random order, random gaps of silence) from a random start."""
    out = np.zeros(n, dtype=np.float32)
    t = -int(rng.integers(0, max(1, int(0.5 * sample_rate))))
    while t < n:
        rec = recordings[int(rng.integers(len(recordings)))]
        a, b = max(0, t), min(n, t + rec.shape[0])
        if b > a:
            out[a:b] += rec[a - t: b - t]
        t += rec.shape[0] + int(rng.uniform(*gap_s) * sample_rate)
    return out


def read_recordings(folders: Sequence[str | Path], sample_rate: int) -> list[np.ndarray]:
    """Every audio file under ``folders`` (recursively), mono at ``sample_rate``.

    For ``qedge train --background DIR``: a folder without audio files, or a file that does not
    decode, is a one-line :class:`QedgeError`."""
    from qedge.runtime.audio import load_audio

    out: list[np.ndarray] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise QedgeError(f"--background {folder}: not a folder")
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in _AUDIO_SUFFIXES)
        if not files:
            raise QedgeError(f"--background {folder}: no audio files ({', '.join(_AUDIO_SUFFIXES)}) in it")
        for path in files:
            wave = load_audio(path, sample_rate)
            if wave.size:
                out.append(wave.astype(np.float32))
    return out


def speech_recordings(sample_rate: int, use: str = "train", per_speaker: int = 150,
                      cache_dir: str | Path | None | bool = None) -> list[np.ndarray]:
    """Bundled FSDD recordings of the :data:`SPEECH_SPEAKERS` ``[use]`` speakers at
    ``sample_rate`` (the first ``per_speaker`` of each by file name), or ``[]`` when FSDD is not
    found. Waveforms go through the clip cache, so later runs do not decode them again."""
    from qedge.data.cache import ClipLoader
    from qedge.data.formats import find_dataset

    try:
        index = find_dataset("fsdd")
    except QedgeError:
        return []
    loader = ClipLoader(FeatureConfig(sample_rate=sample_rate), cache_dir)
    out: list[np.ndarray] = []
    for speaker in SPEECH_SPEAKERS[use]:
        clips = sorted((c for c in index.clips if c.speaker == speaker), key=lambda c: str(c.path))
        out.extend(loader.waveform(c) for c in clips[:per_speaker])
    return out


class MixBackground:
    """With probability ``p``, lay the excerpt over a background at an SNR ~ U(snr_db):
    x' = x + a·b with a such that 10·log10(P_x / P_(a·b)) = SNR, where P_x is the mean power of
    the excerpt's sounding part (:func:`sounding_span`; digital-silence padding does not count).

    Backgrounds come from ``bank`` (kinds ``noise``, ``speech``, ``recorded``: silence is not a
    bed). An excerpt without sound is returned unchanged.
    """

    level = "wave"

    def __init__(self, bank: BackgroundBank, snr_db: tuple[float, float] = (0.0, 20.0), p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise QedgeError(f"background mixing probability must be in [0, 1], got {p}")
        self.bank, self.snr_db, self.p = bank, (float(snr_db[0]), float(snr_db[1])), float(p)
        self.kinds = [k for k in ("noise", "speech", "recorded") if k in bank.kinds]

    def __call__(self, wave: np.ndarray, generator: torch.Generator | None = None) -> np.ndarray:
        rng = _rng(generator)
        if rng.random() >= self.p or not self.kinds:
            return wave
        a, b = sounding_span(wave)
        if b <= a:
            return wave
        p_event = float(np.mean(np.square(wave[a:b], dtype=np.float64)))
        kind = self.kinds[int(rng.integers(len(self.kinds)))]
        bed = self.bank.render(kind, wave.shape[0], rng)
        p_bed = float(np.mean(np.square(bed, dtype=np.float64)))
        if p_event <= 0 or p_bed <= 0:
            return wave
        scale = bed_gain(p_event, p_bed, rng.uniform(*self.snr_db))
        return (wave + np.float32(scale) * bed).astype(np.float32)


class BackgroundDataset(Dataset):
    """``size`` training items of pure background: ``(features (4, T, M), target)``.

    target: the class index ``background_index`` (single-label open set), or, when it is None
    (multi-label), an all-zero vector of ``num_classes``. Every item draws a new excerpt of
    ``num_samples`` samples from ``bank`` (so an epoch never repeats one).
    """

    def __init__(self, bank: BackgroundBank, size: int, config: FeatureConfig, num_samples: int,
                 background_index: int | None, num_classes: int) -> None:
        if size < 1:
            raise QedgeError("a background set needs at least one item")
        self.bank, self.size, self.config = bank, int(size), config
        self.num_samples, self.num_classes = int(num_samples), int(num_classes)
        self.background_index = None if background_index is None else int(background_index)
        self.extractor = LogMelDeltas(config)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        wave, _ = self.bank.excerpt(self.num_samples)
        x = torch.from_numpy(np.ascontiguousarray(self.extractor.compute(wave), dtype=np.float32))
        if self.background_index is None:
            return x, torch.zeros(self.num_classes, dtype=torch.float32)
        return x, torch.tensor(self.background_index, dtype=torch.int64)


def open_set_labels(labels: Sequence[str], task: str) -> list[str]:
    """The output labels of an open-set model: single-label models get one more class,
    :data:`BACKGROUND_LABEL`; multi-label models say "nothing" with all scores low."""
    labels = list(labels)
    if task == "multi-label":
        return labels
    if BACKGROUND_LABEL in labels:
        raise QedgeError(f"the dataset has a class named '{BACKGROUND_LABEL}', the name of the open-set "
                         "background output: rename the class or train with --closed-set")
    return [*labels, BACKGROUND_LABEL]


def training_bank(sample_rate: int, data_format: str, folders: Sequence[str | Path] = (),
                  cache_dir: str | Path | None | bool = None) -> BackgroundBank:
    """The bank of :func:`qedge.train.train_model`'s open set: silence and noise; the bundled
    training speakers' speech unless the model classifies speech itself (FSDD); the user's
    ``--background`` recordings."""
    speech = [] if data_format == "fsdd" else speech_recordings(sample_rate, "train", cache_dir=cache_dir)
    return BackgroundBank.build(sample_rate, speech=speech, recorded=read_recordings(folders, sample_rate))


def open_set_settings(source: Mapping[str, Any]) -> dict[str, Any]:
    """:data:`OPEN_SET_DEFAULTS` overridden by a recipe's or a training record's keys (training
    and fine-tuning read the same three numbers the same way)."""
    return {"negatives": float(source.get("negatives", OPEN_SET_DEFAULTS["negatives"])),
            "mix_p": float(source.get("mix_p", OPEN_SET_DEFAULTS["mix_p"])),
            "mix_snr_db": [float(v) for v in source.get("mix_snr_db", OPEN_SET_DEFAULTS["mix_snr_db"])]}


def with_negatives(train_set: Dataset, bank: BackgroundBank, config: FeatureConfig, labels: Sequence[str],
                   fraction: float) -> Dataset:
    """``train_set`` followed by ``round(fraction · len(train_set))`` :class:`BackgroundDataset`
    items of the same length (``train_set.num_samples``) with the "nothing" target. Training
    (:func:`qedge.train.train_model`) and fine-tuning (:func:`qedge.compress.pipeline.load_datasets`)
    of an open-set model both build their training data with it."""
    from torch.utils.data import ConcatDataset

    size = max(1, int(round(float(fraction) * len(train_set))))
    labels = list(labels)
    background_index = labels.index(BACKGROUND_LABEL) if BACKGROUND_LABEL in labels else None
    negatives = BackgroundDataset(bank, size, config, train_set.num_samples, background_index, len(labels))
    return ConcatDataset([train_set, negatives])
