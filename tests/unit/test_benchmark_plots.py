"""The benchmark plots are drawn from the committed results, and the README shows them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks._common import RESULTS
from benchmarks.plots import PLOTS, PLOTS_DIR, draw_all
from benchmarks.render import load, render

pytest.importorskip("matplotlib", reason="the plots extra (pip install -e '.[plots]')")


def test_every_plot_is_drawn_from_the_results(tmp_path: Path) -> None:
    results = load(RESULTS)
    drawn = draw_all(results, tmp_path)
    assert [name for name, _ in drawn] == [f"{stem}.png" for stem, _, _ in PLOTS]
    for name, _ in drawn:
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name
    # Without the data a plot needs, it is left out rather than drawn empty.
    assert draw_all({"grid": results["grid"]}, tmp_path / "some") == [drawn[0]]


def test_the_readme_embeds_the_committed_plots() -> None:
    readme = (RESULTS.parent / "README.md").read_text()
    embedded = re.findall(r"!\[[^\]]*\]\(plots/([\w.]+)\)", readme)
    assert embedded == [f"{stem}.png" for stem, _, _ in PLOTS]
    for name in embedded:
        assert (PLOTS_DIR / name).is_file(), name
    captions = re.findall(r"^\*\*(.+)\*\*\n\n!\[", readme, flags=re.M)
    assert captions == [caption for _, caption, _ in PLOTS]
    assert "## Pictures" in render(load(RESULTS), [("grid.png", "grid")])
