"""Grid plots: legends outside the axes; many lines become one panel per stem with a band per
cell (mean +- sd over its seeds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from reproduce.records import EpochRow
from reproduce.report import plots


def _runs(root: Path, stems: list[str], lrs: list[str], seeds: int) -> tuple[Any, ...]:
    rows, labels, panels = [], [], []
    for stem in stems:
        for lr in lrs:
            for seed in range(seeds):
                curve = [EpochRow(e, 10.0 * e + seed, 2.3 / e) for e in (1, 2, 3)]
                rows.append({"run": f"{stem}-{lr}-{seed}", "seed": seed, "status": "done",
                             "curve": curve})
                labels.append(f"lr {lr}")
                panels.append(stem)
    return pd.DataFrame(rows), labels, panels


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    saved: list[Any] = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: saved.append(fig) or path)
    return saved


def test_many_lines_are_seed_bands_in_a_panel_per_stem(tmp_path: Path, figures: list[Any]
                                                       ) -> None:
    df, labels, panels = _runs(tmp_path, ["patchify", "conv"], ["0.001", "0.004"], seeds=4)
    assert plots.plot_curves(df, labels, tmp_path / "lr.png", "lr", panels=panels)
    (fig,) = figures
    assert len(fig.axes) == 4  # loss and top-1 for each of the two stems
    assert [ax.get_title() for ax in fig.axes[:2]] == ["patchify", "conv"]
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["lr 0.001 (n=4)",
                                                                   "lr 0.004 (n=4)"]
    assert "mean +- sd over seeds" in fig._suptitle.get_text()
    assert len(fig.axes[0].collections) == 2  # a band per cell


def test_few_lines_stay_lines_with_the_legend_outside(tmp_path: Path, figures: list[Any]
                                                     ) -> None:
    df, labels, panels = _runs(tmp_path, ["patchify", "conv"], ["0.001"], seeds=2)
    cells = [f"{p}, {lab}" for p, lab in zip(panels, labels, strict=True)]
    assert plots.plot_curves(df, cells, tmp_path / "stem.png", "stem")
    (fig,) = figures
    assert len(fig.axes) == 2 and all(ax.get_legend() is None for ax in fig.axes)
    assert len(fig.legends) == 1 and len(fig.axes[1].get_lines()) == 4
