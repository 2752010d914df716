"""qedge.stream: a live tagger on continuous audio — soundscapes with known events
(:mod:`~qedge.stream.soundscape`), the held-out and tuning sets of a model (:mod:`~qedge.stream.sets`),
DCASE scoring of the listen loop's output (:mod:`~qedge.stream.score`) and the choice of
thresholds and smoothing on data (:mod:`~qedge.stream.tune`)."""
