"""The model record: one typed definition of what a model file says about its model.

A ``.qedge`` file's JSON header (``meta``, design.md §8) is read through :class:`ModelRecord`
instead of as an untyped dict, so every command answers the same questions the same way — above
all *which clips are held out*: the split the model was trained with (``qedge train --test-fold`` /
``--test-speaker``, kept in the ``step: train`` history record), else the dataset's default rule.
``qedge evaluate``, ``qedge export`` (its accuracy check and its INT8 calibration clips) and
``qedge compress`` all call :meth:`ModelRecord.test_split`. Epochs are chosen on a validation
part of the training half (:meth:`ModelRecord.fit_split`), never on the held-out clips.

Torch-free (the calibration tools use it on devices without torch).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from qedge.errors import QedgeError

if TYPE_CHECKING:  # pragma: no cover
    from qedge.data.index import ClipIndex
    from qedge.runtime.model_info import ListenSettings

__all__ = ["ModelRecord", "train_record"]


def train_record(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The ``step: train`` record of a model's history (the first one), or ``{}``."""
    for rec in meta.get("history") or []:
        if isinstance(rec, dict) and rec.get("step") == "train":
            return rec
    return {}


@dataclass(frozen=True)
class ModelRecord:
    """What a model file records about its model.

    arch / arch_kwargs: the architecture's registry name and constructor arguments.
    labels: class names in output order.  task: ``"single-label"`` or ``"multi-label"``.
    features: ``FeatureConfig.to_dict()``.  clip_seconds: the scoring window in seconds.
    train_seconds: the training crop (defaults to ``clip_seconds``).
    test_fold / test_speaker: the held-out split the model was trained with (``None``: the
    dataset's default rule).  val_fraction: the share of the training half held back to choose
    epochs on (:meth:`fit_split`; 0: none, the model predates validation splits or its training
    kept the last epoch).  history: the training / compression steps, oldest first.
    background_label: an open-set model's "none of my classes" output (None: closed set).
    listen: how ``qedge listen`` runs it (``ListenSettings.to_dict()``, chosen on data by
    :func:`qedge.stream.tune.choose_listen_settings`); see :meth:`listen_settings`.
    lipschitz: the Lipschitz bound the file records (``meta["lipschitz"]``, a number; ``None``:
    none recorded, ``qedge export --lipschitz`` computes one).  data: the data the file names
    (``meta["data"]``; ``None``: none), see :attr:`data_source` for the fallback to the history.
    """

    arch: str
    arch_kwargs: dict[str, Any]
    labels: list[str]
    task: str
    features: dict[str, Any]
    clip_seconds: float
    train_seconds: float | None = None
    test_fold: str | None = None
    test_speaker: str | None = None
    val_fraction: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    background_label: str | None = None
    listen: dict[str, Any] = field(default_factory=dict)
    lipschitz: float | None = None
    data: str | None = None

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], source: str = "model") -> "ModelRecord":
        """Read a model file's ``meta``; a missing key is a one-line :class:`QedgeError`."""
        missing = [k for k in ("arch", "labels", "features", "clip_seconds") if k not in meta]
        if missing:
            raise QedgeError(f"{source}: model metadata lacks {', '.join(missing)}")
        rec = train_record(meta)
        fold = rec.get("test_fold")
        try:
            return cls(
                arch=str(meta["arch"]),
                arch_kwargs=dict(meta.get("arch_kwargs") or {}),
                labels=[str(x) for x in meta["labels"]],
                task=str(meta.get("task", "single-label")),
                features=dict(meta["features"]),
                clip_seconds=float(meta["clip_seconds"]),
                train_seconds=float(rec["train_seconds"]) if rec.get("train_seconds") else None,
                test_fold=None if fold is None else str(fold),
                test_speaker=rec.get("test_speaker"),
                val_fraction=float(rec.get("val_fraction") or 0.0),
                history=[dict(h) for h in meta.get("history") or [] if isinstance(h, dict)],
                background_label=meta.get("background_label"),
                listen=dict(meta.get("listen") or {}),
                lipschitz=float(meta["lipschitz"]) if isinstance(meta.get("lipschitz"), (int, float)) else None,
                data=str(meta["data"]) if meta.get("data") else None,
            )
        except (TypeError, ValueError) as exc:
            raise QedgeError(f"{source}: malformed model metadata ({exc})") from exc

    # -- the held-out rule ------------------------------------------------------------------------
    def test_split(self, index: "ClipIndex") -> tuple["ClipIndex", "ClipIndex"]:
        """(train, held-out) of ``index`` as this model was trained: its recorded test speaker or
        fold, else the dataset's default rule (:meth:`ClipIndex.split`). A recorded speaker or
        fold that ``index`` lacks is an error, never a silent fallback to another split. Both
        halves are :meth:`as_trained`."""
        index = self.as_trained(index)
        try:
            return index.split(test_fold=self.test_fold, test_speaker=self.test_speaker)
        except QedgeError as exc:
            held = f"speaker {self.test_speaker}" if self.test_speaker else f"fold {self.test_fold}"
            raise QedgeError(f"the model was trained holding out {held}, which this dataset lacks: {exc}") from exc

    def fit_split(self, index: "ClipIndex") -> tuple["ClipIndex", "ClipIndex", "ClipIndex"]:
        """(fit, validation, held-out): :meth:`test_split`, its training half divided by
        :meth:`ClipIndex.validation_split` at the recorded :attr:`val_fraction` — the clips the
        model was fitted on, the ones its epochs were chosen on (empty when none), the test clips."""
        train, test = self.test_split(index)
        fit, val = train.validation_split(self.val_fraction)
        return fit, val, test

    def as_trained(self, index: "ClipIndex") -> "ClipIndex":
        """``index`` with the targets this model was trained on: a sigmoid-head model of
        single-label data (``qedge train --head sigmoid``) sees each clip as a one-hot multi-label
        target; any other model sees ``index`` unchanged."""
        if self.task == "multi-label" and not index.multilabel:
            return dataclasses.replace(index, multilabel=True)
        return index

    @property
    def training(self) -> dict[str, Any]:
        """The ``step: train`` record of :attr:`history` (:func:`train_record`), or ``{}``."""
        return train_record({"history": self.history})

    @property
    def data_source(self) -> str | None:
        """The data the file names: :attr:`data`, else the latest history record's ``data``
        (``None``: neither; ``qedge export`` then verifies on generated signals)."""
        if self.data:
            return self.data
        for record in reversed(self.history):
            if record.get("data"):
                return str(record["data"])
        return None

    @property
    def open_set(self) -> bool:
        """Trained on an open set (``qedge train --open-set``): with a background class (softmax
        head) or with all-zero targets for event-free audio (sigmoid head)."""
        return self.background_label is not None or bool(self.training.get("open_set"))

    @property
    def held_out(self) -> str:
        """The held-out rule in words (for reports)."""
        if self.test_speaker is not None:
            return f"speaker {self.test_speaker}"
        if self.test_fold is not None:
            return f"fold {self.test_fold}"
        return "the dataset's default held-out split"

    # -- windows --------------------------------------------------------------------------------
    def window_frames(self) -> int:
        """Frames in one scoring window: ``FeatureConfig.num_frames(round(clip_seconds · sr))``."""
        return self.frames(self.clip_seconds)

    def frames(self, seconds: float) -> int:
        """Feature frames of ``seconds`` of audio at this model's front end."""
        from qedge.runtime.features import FeatureConfig

        config = FeatureConfig.from_dict(dict(self.features))
        return int(config.num_frames(int(round(seconds * config.sample_rate))))

    def listen_settings(self) -> "ListenSettings":
        """How ``qedge listen`` runs this model: the recorded settings, and where none were
        recorded, a window of the training crop (design: a tag covers no more audio than the
        model learned from) and a hop of ≤ 0.25 s (a quarter of the window when shorter)."""
        from qedge.runtime.model_info import ListenSettings

        settings = ListenSettings.from_dict(self.listen)
        if settings.window_frames is None:
            settings.window_frames = self.crop_frames()
        if settings.hop_frames is None:
            settings.hop_frames = self.listen_hop_frames(settings.window_frames)
        settings.background = self.background_label
        return settings

    def crop_frames(self) -> int:
        """Feature frames of the training crop: the longest listen window (a tag covers no more
        audio than the model learned from)."""
        return self.frames(self.train_seconds or self.clip_seconds)

    def listen_hop_frames(self, window_frames: int) -> int:
        """The hop for a listen window of ``window_frames``: a quarter of it, at most 0.25 s."""
        from qedge.runtime.features import FeatureConfig

        config = FeatureConfig.from_dict(dict(self.features))
        quarter_second = int(0.25 * config.sample_rate / config.hop_length)
        return max(1, min(int(window_frames) // 4, quarter_second))
