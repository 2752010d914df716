"""The ``qedge`` command line: thin, it parses and calls library functions.

Each command lives in ``qedge/commands/<name>.py`` and imports its heavy dependencies (torch,
onnx, TensorRT) inside the function, so ``qedge --help`` and ``qedge listen`` work on a device
that has only the runtime installed. Errors the user can fix arrive as :class:`QedgeError` and
leave as one line on stderr with a non-zero exit code.
"""

from __future__ import annotations

import sys

import typer

from qedge.commands import bench, compress, evaluate, export, inspect, listen, train, tune
from qedge.errors import QedgeError

app = typer.Typer(
    name="qedge",
    help="Quaternion CNNs for audio tagging: train, compress, export (ONNX / INT8 / TensorRT), "
    "listen live on CPU or Jetson, inspect spectra.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.command("train")(train.train)
app.command("evaluate")(evaluate.evaluate)
app.command("compress")(compress.compress)
app.command("export")(export.export)
app.command("listen")(listen.listen)
app.command("tune")(tune.tune)
app.command("inspect")(inspect.inspect)
app.command("bench")(bench.bench)


def main() -> None:
    try:
        app()
    except QedgeError as exc:
        print(f"qedge: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("qedge: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
