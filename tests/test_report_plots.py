"""The report figures label every line correctly (issue 17 item 4), checked on the matplotlib
objects rather than on images: every labelled line or marker series appears in a legend of its
figure, one label always has one style, the leading-order theory lines of the V-B panels are
labelled as such, and zscores.png marks the leading-order rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import rgflow
from rgflow.cli import config_from_dict
from rgflow.report import make_plots, run_report

plt = pytest.importorskip("matplotlib.pyplot")


def _style(artist) -> tuple:
    """(colour, line style, marker) of a line, or of the data line of an errorbar container / bars."""
    from matplotlib.colors import to_hex
    from matplotlib.container import BarContainer, ErrorbarContainer

    if isinstance(artist, ErrorbarContainer):
        artist = artist.lines[0]
    if isinstance(artist, BarContainer):
        p = artist.patches[0]
        return ("bar", to_hex(p.get_facecolor(), keep_alpha=True), p.get_hatch())
    return (to_hex(artist.get_color()), artist.get_linestyle(), artist.get_marker())


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    c = rgflow.critical("tanh")
    spec = config_from_dict(
        {
            "title": "plots",
            "network": {"activation": "tanh", "depth": 4, "C_b": c.C_b, "C_W": c.C_W},
            "inputs": {"generate": {"n": 2, "dim": 3, "seed": 0}},
            "ensemble": {"widths": [8, 16], "networks": 2000, "groups": 8},
        }
    )
    res = run_report(spec, None, progress=False, log=None)
    figs: dict[str, object] = {}
    out = tmp_path_factory.mktemp("plots")

    import rgflow.report._mlp as mod

    def keep(plt_, fig, out_, name, files):  # record the figure instead of closing it
        figs[name] = fig
        files.append(name)

    orig = mod.save_figure
    mod.save_figure = keep
    try:
        ens = res["_ensembles"]
        labels = [e["label"] for e in res["ensembles"]]
        files = make_plots(res["_theory"], ens, labels, res["entries"], 4, Path(out), "plots")
    finally:
        mod.save_figure = orig
    assert files == ["depth.png", "width.png", "scaling.png", "zscores.png"]
    yield figs
    for f in figs.values():
        plt.close(f)


@pytest.mark.parametrize("name", ["depth.png", "width.png", "scaling.png", "zscores.png"])
def test_every_line_is_in_a_legend_with_one_style(figures, name):
    fig = figures[name]
    legend_texts: set[str] = set()
    styles: dict[str, set[tuple]] = {}
    for ax in fig.axes:
        if ax.get_legend() is not None:
            legend_texts |= {t.get_text() for t in ax.get_legend().get_texts()}
        handles, labels = ax.get_legend_handles_labels()
        for h, lab in zip(handles, labels, strict=True):
            styles.setdefault(lab, set()).add(_style(h))
    assert styles
    missing = set(styles) - legend_texts
    assert not missing, f"{name}: lines without a legend entry: {missing}"
    mixed = {lab: st for lab, st in styles.items() if len(st) > 1}
    assert not mixed, f"{name}: one label, several styles: {mixed}"


@pytest.mark.parametrize("name", ["depth.png", "width.png"])
def test_theory_lines_say_what_order_they_are(figures, name):
    fig = figures[name]
    for ax in fig.axes:
        title = ax.get_title()
        if not title:
            continue
        black = [ln.get_label() for ln in ax.get_lines() if ln.get_color() in ("k", "black", (0, 0, 0, 1))]
        theory = [lab for lab in black if lab.startswith("theory")]
        assert len(theory) == 1, (title, black)
        if title[0] in "VDFAB":
            assert "leading order" in theory[0] and "O(ℓ/n)" in theory[0], (title, theory)
        else:
            assert ("n=∞" in theory[0]) if name == "depth.png" else ("K1/n" in theory[0]), (title, theory)


def test_zscores_marks_leading_order_rows(figures):
    (ax,) = figures["zscores.png"].axes
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("leading order" in t for t in texts)
    assert any(t.startswith("z_eff") for t in texts)
    assert "leading-order theory" in ax.get_title()
    hatched = [p for p in ax.patches if p.get_hatch()]
    plain = [p for p in ax.patches if not p.get_hatch()]
    assert hatched and plain
    # layers 2..4 at two widths: K, Θ (first order) plain, V, D, F, A, B (leading order) hatched
    assert len(plain) == 2 * 3 * 2 and len(hatched) == 5 * 3 * 2
    assert np.isfinite([p.get_height() for p in ax.patches]).all()
