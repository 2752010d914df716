"""The benchmark suite runner (`python -m benchmarks` / `qedge bench`): a quick run of sections a and c
into a temporary results folder, and the runner's pieces on known inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import __main__ as runner  # noqa: E402
from benchmarks.common import RESULTS_ENV, linear_fit, machine  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("bench")
    env = {**os.environ, RESULTS_ENV: str(out), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--only", "a,c"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=170)
    return out, proc


@pytest.mark.timeout(180)
def test_quick_run_writes_json_md_and_pngs(quick_run: tuple[Path, subprocess.CompletedProcess]) -> None:
    out, proc = quick_run
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    slug = machine()["slug"]
    summary = json.loads((out / f"{slug}.json").read_text())
    assert summary["quick"] is True
    assert summary["machine"]["cores"] >= 1 and summary["machine"]["cpu"]
    sections = summary["sections"]
    assert sections["qconv"]["status"] == "ok" and sections["macs"]["status"] == "ok"
    assert sections["backends"]["status"] == "not run this time" and sections["backends"]["result"] is None
    md = (out / f"{slug}.md").read_text()
    assert summary["machine"]["cpu"] in md
    assert "## (a) Quaternion convolution" in md and "## (c) Latency vs MACs" in md and "R² =" in md
    assert "## (b)" not in md  # nothing measured, no table
    for name in ("macs", "qconv"):
        png = out / f"{slug}-{name}.png"
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000
        assert f"]({png.name})" in md
    assert not (out / f"{slug}-backends.png").exists()


def test_quick_qconv_ratios_are_sane(quick_run: tuple[Path, subprocess.CompletedProcess]) -> None:
    out, _ = quick_run
    qconv = json.loads((out / f"qconv-{machine()['slug']}.json").read_text())
    assert qconv["threads"] == 1 and len(qconv["rows"]) == 2
    for row in qconv["rows"]:
        for phase in ("infer", "train"):
            for way in ("assembled", "naive16", "real"):
                assert row[f"{phase}_{way}_ms"] > 0
            assert row[f"{phase}_naive16_over_assembled"] == pytest.approx(
                row[f"{phase}_naive16_ms"] / row[f"{phase}_assembled_ms"])
            assert row[f"{phase}_assembled_over_real"] == pytest.approx(
                row[f"{phase}_assembled_ms"] / row[f"{phase}_real_ms"])


def test_quick_macs_fit_and_ceiling_are_sane(quick_run: tuple[Path, subprocess.CompletedProcess]) -> None:
    out, _ = quick_run
    macs = json.loads((out / f"macs-{machine()['slug']}.json").read_text())
    rows = {r["name"]: r for r in macs["rows"]}
    assert set(rows) == {"dense", "p0.5", "p0.5-r16"}
    # pruning removes MACs; rounding widths up to multiples of 16 can only put some back
    assert rows["p0.5"]["macs"] < rows["p0.5-r16"]["macs"] <= rows["dense"]["macs"]
    assert rows["dense"]["macs_ratio"] == 1.0
    fit = macs["fit"]
    assert fit["n"] == 3 and 0.0 <= fit["r2"] <= 1.0
    assert macs["ceiling_gmacs_per_s"] > 0 and macs["ort_ceiling_gmacs_per_s"] > 0
    for r in rows.values():
        assert r["latency_ms"] > 0
        assert r["gmacs_per_s"] == pytest.approx(r["macs"] / 1e9 / (r["latency_ms"] / 1e3))
        assert r["fraction_of_ceiling"] == pytest.approx(r["gmacs_per_s"] / macs["ceiling_gmacs_per_s"])
    # the fit is the least-squares line through the rows it reports
    again = linear_fit([r["macs"] / 1e9 for r in rows.values()], [r["latency_ms"] for r in rows.values()])
    assert fit["a_ms_per_gmac"] == pytest.approx(again["a"]) and fit["b_ms"] == pytest.approx(again["b"])
    summary = json.loads((out / f"{machine()['slug']}.json").read_text())
    assert summary["headlines"]["macs_fit"]["r2"] == pytest.approx(fit["r2"])


def test_linear_fit_recovers_a_line_and_bounds_r2() -> None:
    exact = linear_fit([0.5, 1.0, 2.0, 4.0], [2.0, 3.0, 5.0, 9.0])  # y = 2x + 1
    assert exact["a"] == pytest.approx(2.0) and exact["b"] == pytest.approx(1.0) and exact["r2"] == pytest.approx(1.0)
    noisy = linear_fit([1, 2, 3, 4, 5], [1.0, 3.0, 2.0, 5.0, 4.0])
    assert 0.0 < noisy["r2"] < 1.0
    assert noisy["r2"] == pytest.approx(0.64)  # Pearson r = 0.8
    with pytest.raises(ValueError):
        linear_fit([1.0, 1.0], [2.0, 3.0])


def test_sections_are_selected_by_letter_or_name() -> None:
    assert [s.name for s in runner.select("c,qconv")] == ["qconv", "macs"]
    assert len(runner.select(None)) == len(runner.SECTIONS)
    with pytest.raises(ValueError, match="unknown benchmark section"):
        runner.select("a,zz")


def test_quick_results_default_to_their_own_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RESULTS_ENV, raising=False)
    assert runner.results_folder(True) == runner.RESULTS / "quick"
    assert runner.results_folder(False) == runner.RESULTS
    monkeypatch.setenv(RESULTS_ENV, "/tmp/somewhere")
    assert runner.results_folder(False) == Path("/tmp/somewhere")


def test_cli_bench_rejects_unknown_section_in_one_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "qedge.cli", "bench", "--only", "zz"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0 and "unknown benchmark section" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_bench_runs_the_suite_in_a_child_process(tmp_path: Path) -> None:
    """`qedge bench` runs `python -m benchmarks` in the checkout: the section's results are written,
    and the qedge process itself never imports the top-level `benchmarks` package."""
    code = ("import sys; from qedge.cli import main; sys.argv = ['qedge', 'bench', '--quick', '--only', 'c', "
            f"'--results', {str(tmp_path)!r}]\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
            "assert 'benchmarks' not in sys.modules, 'qedge imported the benchmarks package'")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=170)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "[1/1] macs: ok" in proc.stdout
    assert (tmp_path / f"macs-{machine()['slug']}.json").is_file()


def test_cli_bench_outside_a_source_tree_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import qedge
    from qedge.commands import bench
    from qedge.errors import QedgeError

    monkeypatch.setattr(qedge, "__file__", str(tmp_path / "site-packages" / "qedge" / "__init__.py"))
    with pytest.raises(QedgeError, match="source tree"):
        bench.bench(quick=True, only="a", results=None, model=None, threads=None)


def _fake(code: str, timeout: int = 60) -> runner.Section:
    return runner.Section("z", "fake", "a fake section", lambda quick, args, out: [sys.executable, "-c", code],
                          timeout_s=(timeout, timeout))


def test_failing_or_hung_section_is_reported_not_raised(tmp_path: Path) -> None:
    args = runner.parser().parse_args([])
    lines: list[str] = []
    failed = runner.run_section(_fake("import sys; print('boom'); sys.exit(3)"), True, args, tmp_path, lines.append)
    assert failed["status"] == "failed" and failed["reason"] == "exit code 3: boom"
    assert "  fake: boom" in lines and (tmp_path / "logs" / "fake.log").read_text().endswith("boom\n")
    hung = runner.run_section(_fake("import time; time.sleep(60)", timeout=1), True, args, tmp_path, lines.append)
    assert hung["status"] == "failed" and "timed out" in hung["reason"] and hung["seconds"] < 30
    ok = runner.run_section(_fake("print('fine')"), True, args, tmp_path, lines.append)
    assert ok["status"] == "ok"
