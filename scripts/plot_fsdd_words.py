"""Log-mel spectrograms of one spoken digit by every FSDD speaker (docs/fsdd-six.png).

Shows why the held-out speaker's "six" is the recipe's main error: the other speakers' "six"
starts with the /s/ frication (energy above ~2 kHz before the vowel); yweweler's recordings start
at the vowel and are shorter, which the models read as "eight".

    python scripts/plot_fsdd_words.py [--digits 6,8] [--takes 4] [--out docs/fsdd-six.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from qedge.data import resolve_data_path  # noqa: E402
from qedge.runtime.audio import load_audio  # noqa: E402
from qedge.runtime.features import FeatureConfig, LogMelDeltas  # noqa: E402
from qedge.recipes import RECIPES  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digits", default="6,8")
    parser.add_argument("--takes", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("docs/fsdd-six.png"))
    args = parser.parse_args()
    root = resolve_data_path("fsdd") / "recordings"
    config = FeatureConfig.from_dict({**FeatureConfig().to_dict(), **RECIPES["fsdd"]["features"]})
    extractor = LogMelDeltas(config)
    speakers = sorted({p.stem.split("_")[1] for p in root.glob("*.wav")})
    digits = args.digits.split(",")
    cols = [(d, t) for d in digits for t in range(args.takes)]
    fig, axes = plt.subplots(len(speakers), len(cols), figsize=(1.6 * len(cols), 1.3 * len(speakers)),
                             sharex=True, sharey=True, squeeze=False)
    for row, speaker in enumerate(speakers):
        for col, (digit, take) in enumerate(cols):
            ax = axes[row][col]
            psi = extractor.compute(load_audio(root / f"{digit}_{speaker}_{take}.wav", config.sample_rate))[0]
            ax.imshow(psi.T, origin="lower", aspect="auto", vmin=psi.max() - 70, vmax=psi.max(), cmap="magma",
                      extent=(0, psi.shape[0] * config.hop_length / config.sample_rate, 0, config.n_mels))
            ax.set_xlim(0, 0.75)
            if row == 0:
                ax.set_title(f'"{digit}" take {take}', fontsize=8)
            if col == 0:
                ax.set_ylabel(speaker, fontsize=8)
            ax.tick_params(labelsize=6)
    fig.supxlabel("seconds", fontsize=8)
    fig.supylabel("mel bin (0–4 kHz)", fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
