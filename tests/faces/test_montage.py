"""Montage and geometry plot: sizes and panel counts on a hand-built Dataset of the open_pairs form,
and end to end on a synthetic extraction."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from matplotlib.figure import Figure
from test_export import extract_small, pairs_dataset

from pairextract.plot import geometry_plot, montage


def _png_size(fig: Figure) -> tuple[int, int]:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    buf.seek(0)
    h, w = matplotlib.image.imread(buf).shape[:2]
    return w, h


def _image_axes(fig: Figure) -> list[object]:
    return [ax for ax in fig.axes if ax.get_images()]


def test_montage_size_and_panels_fixed_seed() -> None:
    ds = pairs_dataset(n=30, box=16, chunk=4)
    fig = montage(ds, n=24, seed=0)
    # 24 pairs -> 48 image panels; 4 pairs a row -> 6 rows.
    assert len(fig.axes) == 48 and len(_image_axes(fig)) == 48
    # width 2*0.1 + 4*2*1.0 + 3*0.15 = 8.65 in; height 0.3 + 6*(0.36 + 1.0) + 0.1 = 8.56 in.
    assert _png_size(fig) == (865, 856)
    labels = [ax.get_label() for ax in fig.axes]
    assert labels[0].endswith("untilted") and labels[1].endswith("tilted")


def test_montage_same_seed_same_pairs() -> None:
    ds = pairs_dataset(n=30, box=16, chunk=4)

    def chosen(seed: int) -> list[str]:
        return [ax.get_label() for ax in montage(ds, n=5, seed=seed).axes]

    assert chosen(3) == chosen(3)
    assert chosen(3) != chosen(4)
    fig = montage(ds, n=5, seed=3)
    # Each panel shows the Dataset's own image for the labelled pair.
    ids = list(ds.pair_id.values)
    for ax in fig.axes:
        pid, view = ax.get_label().split()[1:]
        np.testing.assert_array_equal(ax.get_images()[0].get_array(),
                                      ds[view].values[ids.index(int(pid))])


def test_montage_labels_and_fewer_pairs_than_n() -> None:
    ds = pairs_dataset(n=3, box=16)
    fig = montage(ds, n=24, seed=0, ncols=4)
    assert len(fig.axes) == 6
    # Three pairs in one row: 2*0.1 + 3*2 + 2*0.15 = 6.5 in; 0.3 + 1.36 + 0.1 = 1.76 in.
    assert _png_size(fig) == (650, 176)
    texts = " ".join(t.get_text() for t in fig.texts)
    assert "3 of 3 kept pairs" in texts
    assert "tilt 50.2°" in texts and "u_001.mrc | t_001.mrc" in texts
    for pid in ds.pair_id.values:
        assert f"pair {pid}" in texts


def test_montage_marks_flagged_pairs_and_shows_in_jupyter() -> None:
    ds = pairs_dataset(n=3, box=16)
    ds = ds.assign_coords(flagged=("pair", np.array([False, True, False])),
                          residual=("pair", np.array([0.3, 87.4, 0.2])))
    fig = montage(ds, n=3)
    flagged = [t.get_text() for t in fig.texts if "FLAGGED" in t.get_text()]
    assert flagged == [f"pair {ds.pair_id.values[1]}  ·  tilt 50.2°  ·  FLAGGED 87 px"]
    # Jupyter displays the returned figure through _repr_png_, without a pyplot backend.
    png = fig._repr_png_()  # type: ignore[attr-defined]
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(io.BytesIO(png)).shape[:2] == (176, 650)


def test_montage_dropped_needs_output_folder() -> None:
    with pytest.raises(ValueError, match="output folder"):
        montage(pairs_dataset(n=3), show_dropped=True)
    with pytest.raises(ValueError, match="n must be"):
        montage(pairs_dataset(n=3), n=-1)


def test_geometry_plot_from_dataset_marks_flagged(tmp_path: Path) -> None:
    ds = pairs_dataset(n=12)
    flagged = np.zeros(12, dtype=bool)
    flagged[[2]] = True
    residual = np.where(flagged, 40.0, 0.5)
    # Make pair 2 a wrong pairing: its tilted point is far from the affine prediction.
    x_t = ds.x_t.values.copy()
    x_t[2] += 40.0
    ds = ds.assign_coords(flagged=("pair", flagged), residual=("pair", residual),
                          x_t=("pair", x_t))
    fig = geometry_plot(ds, 1, threshold=5.0)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    mic1 = ds.mic_pair_id.values == 1
    # One line per pair of micrograph pair 1, coloured by residual.
    lines = ax.collections[0]
    assert len(lines.get_segments()) == int(mic1.sum())
    np.testing.assert_allclose(lines.get_array(), residual[mic1])
    texts = [t.get_text() for t in ax.texts]
    assert texts == [str(ds.pair_id.values[2])]
    assert "1 flagged" in fig._suptitle.get_text()
    fig.savefig(tmp_path / "g.png")
    assert (tmp_path / "g.png").stat().st_size > 1000


def test_geometry_plot_unknown_mic_pair() -> None:
    with pytest.raises(ValueError, match="micrograph pair 9"):
        geometry_plot(pairs_dataset(n=6), 9)


# ---------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def extracted(client, small_dataset, tmp_path_factory):  # type: ignore[no-untyped-def]
    return extract_small(client, small_dataset, tmp_path_factory.mktemp("montage-run") / "out")


def test_montage_of_real_output_with_dropped(extracted: Path, tmp_path: Path) -> None:
    from pairextract.cli import main
    from pairextract.store import read_drops

    drops = read_drops(extracted)
    assert len(drops) > 0
    png = tmp_path / "pairs.png"
    assert main(["montage", str(extracted), "--n", "6", "--out", str(png), "--dropped",
                 "--seed", "1"]) == 0
    fig = montage(extracted, n=6, seed=1, show_dropped=True)
    n_drop = min(6, len(drops))
    assert len(fig.axes) == 2 * (6 + n_drop)
    texts = " ".join(t.get_text() for t in fig.texts)
    assert all(r in texts for r in drops["reason"]) or n_drop < len(drops)
    assert "tilt 50." in texts
    rows = 2 + -(-n_drop // 4)
    height = 2 * 0.3 + rows * 1.36 + 0.1
    assert matplotlib.image.imread(png).shape[:2] == (round(height * 100), 865)


def test_geometry_plot_of_real_output_and_inputs(extracted: Path, small_dataset,  # type: ignore[no-untyped-def]
                                                 tmp_path: Path) -> None:
    from pairextract.cli import main
    from pairextract.io import read_pairs

    fig = geometry_plot(extracted, 2)
    n_mic2 = int((small_dataset.truth["mic_pair_id"] == 2).sum())
    # Kept and dropped pairs of the micrograph pair are all drawn.
    assert len(fig.axes[0].collections[0].get_segments()) == n_mic2
    inputs = read_pairs(small_dataset.pair_table)
    fig2 = geometry_plot(inputs, 2)
    assert len(fig2.axes[0].collections[0].get_segments()) == n_mic2
    assert main(["montage", str(extracted), "--geometry", "2", "--out",
                 str(tmp_path / "g.png")]) == 0
    assert (tmp_path / "g.png").stat().st_size > 1000
