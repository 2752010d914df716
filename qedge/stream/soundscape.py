"""Soundscapes with known events: continuous audio to test a live tagger on (``qedge evaluate --stream``).

A soundscape is a sequence of *scenes*, built from a seed so that two runs give the same audio:

- an **event scene**: a bed of background (noise or speech, :class:`~qedge.data.background.BackgroundBank`)
  2–4 s longer than the event, with one clip's sounding part laid over it at ``snr_db`` (SNR of
  the event's mean power against the bed's, over the event). The reference event spans the
  sounding part (:func:`~qedge.data.background.sounding_span`: a clip padded with digital
  silence has its event where it sounds, not over the padding).
- a **quiet stretch**: ``quiet_seconds`` of one kind of event-free audio (silence, noise or
  speech) — where every tag is a false alarm.

Scenes follow each other with no gap; clips are used once each, in a seeded random order; quiet
stretches come after every ``events_per_quiet`` event scenes, cycling through ``quiet_kinds``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from qedge.errors import QedgeError

if TYPE_CHECKING:  # pragma: no cover
    from qedge.data.background import BackgroundBank

__all__ = ["Soundscape", "build_soundscape", "SoundscapeSpec"]


@dataclass
class Soundscape:
    """Audio (mono float32 at ``sample_rate``) with its truth.

    events: ``(onset, offset, label)`` in seconds. quiet: ``(start, end, kind)`` of the
    event-free stretches. beds: ``(start, end, kind)`` of each event scene's background.
    """

    audio: np.ndarray
    sample_rate: int
    events: list[tuple[float, float, str]] = field(default_factory=list)
    quiet: list[tuple[float, float, str]] = field(default_factory=list)
    beds: list[tuple[float, float, str]] = field(default_factory=list)
    seed: int = 0

    @property
    def duration(self) -> float:
        return self.audio.shape[0] / self.sample_rate

    def quiet_seconds(self) -> dict[str, float]:
        """Seconds of event-free audio per kind."""
        out: dict[str, float] = {}
        for start, end, kind in self.quiet:
            out[kind] = out.get(kind, 0.0) + end - start
        return out

    def truth(self) -> dict:
        return {"sample_rate": self.sample_rate, "seconds": round(self.duration, 3), "seed": self.seed,
                "events": [list(e) for e in self.events], "quiet": [list(q) for q in self.quiet],
                "beds": [list(b) for b in self.beds]}

    def write(self, path: str | Path) -> Path:
        """``path`` (.wav, float32) and ``path.json`` (the truth) beside it."""
        import soundfile as sf

        path = Path(path)
        sf.write(str(path), self.audio, self.sample_rate, subtype="FLOAT")
        path.with_name(path.name + ".json").write_text(json.dumps(self.truth(), indent=1))
        return path


@dataclass
class SoundscapeSpec:
    """How a soundscape is laid out (see the module docstring)."""

    snr_db: float = 10.0
    bed_kinds: tuple[str, ...] = ("noise", "speech")
    quiet_kinds: tuple[str, ...] = ("silence", "noise", "speech")
    quiet_seconds: float = 20.0
    events_per_quiet: int = 4
    lead_seconds: tuple[float, float] = (1.0, 2.0)
    tail_seconds: tuple[float, float] = (1.0, 2.0)

    def to_dict(self) -> dict:
        return asdict(self)


def build_soundscape(clips: Sequence[tuple[np.ndarray, str]], bank: "BackgroundBank", seed: int = 0,
                     spec: SoundscapeSpec | None = None, quiet_total: dict[str, float] | None = None) -> Soundscape:
    """A soundscape of ``clips`` (``(waveform at bank.sample_rate, label)``, each used once) and
    event-free stretches, seeded by ``seed``.

    quiet_total: seconds of event-free audio wanted per kind; what the interleaving leaves short
    is appended at the end in ``spec.quiet_seconds`` stretches (so false alarms per hour can be
    measured on more audio than the events need).
    """
    from qedge.data.background import bed_gain, sounding_span

    spec = spec or SoundscapeSpec()
    sr = int(bank.sample_rate)
    rng = np.random.default_rng(int(seed))
    pieces: list[np.ndarray] = []
    events: list[tuple[float, float, str]] = []
    quiet: list[tuple[float, float, str]] = []
    beds: list[tuple[float, float, str]] = []
    t = 0  # samples so far
    bed_kinds = [k for k in spec.bed_kinds if k in bank.kinds]
    quiet_kinds = [k for k in spec.quiet_kinds if k in bank.kinds]
    if not bed_kinds and clips:
        raise QedgeError(f"no background for the event beds: the bank has {bank.kinds}, the beds need {spec.bed_kinds}")
    n_quiet = int(round(spec.quiet_seconds * sr))
    have: dict[str, float] = {}  # seconds of quiet audio per kind so far

    def add_quiet(kind: str) -> None:
        nonlocal t
        pieces.append(bank.render(kind, n_quiet, rng))
        quiet.append((t / sr, (t + n_quiet) / sr, kind))
        have[kind] = have.get(kind, 0.0) + n_quiet / sr
        t += n_quiet

    order = rng.permutation(len(clips)) if clips else []
    for i, k in enumerate(order):
        wave, label = clips[int(k)]
        a, b = sounding_span(np.asarray(wave, dtype=np.float32))
        if b <= a:
            continue
        event = np.asarray(wave[a:b], dtype=np.float32)
        lead = int(rng.uniform(*spec.lead_seconds) * sr)
        tail = int(rng.uniform(*spec.tail_seconds) * sr)
        kind = bed_kinds[i % len(bed_kinds)]
        bed = bank.render(kind, lead + event.shape[0] + tail, rng)
        p_event = float(np.mean(np.square(event, dtype=np.float64)))
        p_bed = float(np.mean(np.square(bed[lead: lead + event.shape[0]], dtype=np.float64)))
        scene = bed.copy()
        if p_bed > 0 and p_event > 0:  # the bed is scaled so that the event sits at snr_db above it
            scene *= np.float32(bed_gain(p_event, p_bed, spec.snr_db))
        scene[lead: lead + event.shape[0]] += event
        pieces.append(scene)
        beds.append((t / sr, (t + scene.shape[0]) / sr, kind))
        events.append(((t + lead) / sr, (t + lead + event.shape[0]) / sr, label))
        t += scene.shape[0]
        if quiet_kinds and spec.events_per_quiet > 0 and (i + 1) % spec.events_per_quiet == 0:
            add_quiet(quiet_kinds[((i + 1) // spec.events_per_quiet - 1) % len(quiet_kinds)])
    for kind, want in (quiet_total or {}).items():
        if kind not in bank.kinds:
            raise QedgeError(f"no '{kind}' audio for the quiet stretches (the bank has {bank.kinds})")
        while have.get(kind, 0.0) + 1e-9 < want:
            add_quiet(kind)
    audio = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak > 1.0:  # keep it a valid recording; the truth's times do not change
        audio = audio / np.float32(peak)
    return Soundscape(audio.astype(np.float32), sr, events, quiet, beds, int(seed))

