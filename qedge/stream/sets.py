"""The soundscapes a model is tuned and evaluated on, kept apart by construction.

``use="test"`` (``qedge evaluate --stream``): the model's held-out clips
(:meth:`qedge.meta.ModelRecord.test_split`), beds and quiet speech from the bundled FSDD speakers
of ``SPEECH_SPEAKERS["test"]``. ``use="tune"`` (choosing thresholds after training): the
validation clips the model's epochs were chosen on (:meth:`qedge.meta.ModelRecord.fit_split`; a
model trained without a validation split: its training clips), speech of
``SPEECH_SPEAKERS["tune"]``. Neither speaker set is one the model trained on
(``SPEECH_SPEAKERS["train"]``); generated silence and noise come from seeds. For a model that
classifies speech (FSDD) there is no speech background.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from qedge.errors import QedgeError
from qedge.stream.soundscape import Soundscape, SoundscapeSpec, build_soundscape

if TYPE_CHECKING:  # pragma: no cover
    from qedge.data.background import BackgroundBank
    from qedge.data.index import ClipIndex
    from qedge.meta import ModelRecord

__all__ = ["stream_bank", "stream_clips", "stream_soundscape", "event_free_inputs"]


def stream_bank(sample_rate: int, data_format: str, use: str) -> "BackgroundBank":
    """Silence, noise and (unless the model classifies speech) the ``use`` speakers' speech."""
    from qedge.data.background import BackgroundBank, speech_recordings

    speech = [] if data_format == "fsdd" else speech_recordings(sample_rate, use)
    return BackgroundBank.build(sample_rate, speech=speech)


def stream_clips(record: "ModelRecord", index: "ClipIndex", use: str, per_label: int | None = None
                 ) -> list[tuple[np.ndarray, str]]:
    """(waveform at the model rate, label) of the held-out (``test``) or tuning (``tune``: the
    validation clips, else the training clips) clips whose label the model knows; at most
    ``per_label`` of each label (first by path)."""
    from qedge.data.cache import ClipLoader
    from qedge.runtime.features import FeatureConfig

    fit, val, test = record.fit_split(index)
    chosen = (test if use == "test" else val if len(val) else fit).clips
    known = set(record.labels)
    loader = ClipLoader(FeatureConfig.from_dict(record.features))
    out: list[tuple[np.ndarray, str]] = []
    counts: dict[str, int] = {}
    for clip in sorted(chosen, key=lambda c: str(c.path)):
        if len(clip.labels) != 1 or clip.labels[0] not in known:
            continue
        label = clip.labels[0]
        if per_label is not None and counts.get(label, 0) >= per_label:
            continue
        counts[label] = counts.get(label, 0) + 1
        out.append((loader.waveform(clip), label))
    if not out:
        raise QedgeError("no clips with the model's labels in this split: nothing to build a soundscape from")
    return out


def stream_soundscape(record: "ModelRecord", index: "ClipIndex", use: str = "test", seed: int = 0,
                      quiet_seconds: float = 0.0, per_label: int | None = None,
                      spec: SoundscapeSpec | None = None) -> Soundscape:
    """The ``use`` soundscape of a model: its clips on beds at ``spec.snr_db`` (10 dB), quiet
    stretches between them, topped up to ``quiet_seconds`` of each quiet kind."""
    from qedge.runtime.features import FeatureConfig

    sr = FeatureConfig.from_dict(record.features).sample_rate
    bank = stream_bank(sr, index.format, use)
    spec = spec or SoundscapeSpec()
    kinds: Sequence[str] = [k for k in spec.quiet_kinds if k in bank.kinds]
    spec = SoundscapeSpec(**{**spec.to_dict(), "quiet_kinds": tuple(kinds),
                             "bed_kinds": tuple(k for k in spec.bed_kinds if k in bank.kinds)})
    clips = stream_clips(record, index, use, per_label)
    total = {k: float(quiet_seconds) for k in kinds} if quiet_seconds else None
    return build_soundscape(clips, bank, seed=seed, spec=spec, quiet_total=total)


def event_free_inputs(sample_rate: int, seconds: float = 20.0) -> dict[str, np.ndarray]:
    """The three event-free inputs of issue #13's table (what a new user tries first):
    ``seconds`` of digital silence, of white noise at −40 dBFS (seed 0), and of spoken digits by
    the FSDD speaker of ``SPEECH_SPEAKERS["test"]`` (never an open-set training negative) with
    0.15 s gaps. A model that tags anything in them hallucinates."""
    from qedge.data.background import SPEECH_SPEAKERS, colored_noise, scale_to_dbfs, speech_recordings

    n = int(round(seconds * sample_rate))
    gap = np.zeros(int(0.15 * sample_rate), np.float32)
    words: list[np.ndarray] = []
    for word in speech_recordings(sample_rate, "test", per_speaker=60):
        words += [word, gap]
        if sum(w.size for w in words) >= n:
            break
    if not words:
        raise QedgeError(f"no bundled FSDD recordings of {', '.join(SPEECH_SPEAKERS['test'])}: "
                         "the speech input needs them")
    speech = np.concatenate(words)
    speech = np.tile(speech, int(np.ceil(n / speech.size)))[:n]
    return {"silence": np.zeros(n, np.float32),
            "noise": scale_to_dbfs(colored_noise(n, 0.0, np.random.default_rng(0)), -40.0).astype(np.float32),
            "speech": speech.astype(np.float32)}
