"""Scan: validation, derived properties, copy, repr and plot."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

import ballistix as bx  # noqa: E402


def grid(ny=4, nx=5):
    h = np.arange(ny * nx, dtype=np.float64).reshape(ny, nx) * 1e-7
    h[0, 0] = h[2, 3] = np.nan
    return h


@pytest.mark.parametrize(
    "heights",
    [
        np.zeros(5),  # 1-D
        np.zeros((2, 3, 4)),  # 3-D
        np.zeros((0, 5)),  # empty
        np.zeros((3, 3), dtype=np.int64),  # integers cannot hold NaN
        np.zeros((3, 3), dtype=bool),
        np.zeros((3, 3), dtype=complex),
        np.array([[1.0, np.inf]]),
        np.array([[1.0, -np.inf]]),
        [["a", "b"]],
    ],
)
def test_bad_heights(heights):
    with pytest.raises(bx.ParameterError):
        bx.Scan(heights, 1e-6, 1e-6)


@pytest.mark.parametrize("dx", [0, -1e-6, float("nan"), float("inf"), "a", None, [1e-6]])
def test_bad_spacing(dx):
    with pytest.raises(bx.ParameterError, match="dx"):
        bx.Scan(grid(), dx, 1e-6)
    with pytest.raises(bx.ParameterError, match="dy"):
        bx.Scan(grid(), 1e-6, dx)


@pytest.mark.parametrize("meta", [[], "labels", 3, (("a", 1),)])
def test_meta_must_be_a_dict(meta):
    with pytest.raises(bx.ParameterError, match="meta"):
        bx.Scan(grid(), 1e-6, 1e-6, meta)


def test_parameter_error_is_in_the_family():
    assert issubclass(bx.ParameterError, bx.BallistixError)
    assert issubclass(bx.ParameterError, ValueError)


def test_spacing_is_converted_to_float():
    s = bx.Scan(grid(), np.float32(2.5e-6), "5e-6")
    assert type(s.dx) is float and type(s.dy) is float
    assert (s.dx, s.dy) == (float(np.float32(2.5e-6)), 5e-6)


def test_float32_and_lists_are_accepted():
    assert bx.Scan(grid().astype(np.float32), 1e-6, 1e-6).heights.dtype == np.float32
    assert bx.Scan([[1.0, 2.0], [3.0, np.nan]], 1e-6, 1e-6).heights.dtype == np.float64


def test_derived_properties():
    s = bx.Scan(grid(4, 5), dx=2e-6, dy=3e-6)
    assert s.shape == (4, 5)
    assert s.valid_fraction == pytest.approx(18 / 20)
    assert s.extent_m == pytest.approx((5 * 2e-6, 4 * 3e-6))
    assert s.valid_mask.dtype == bool and s.valid_mask.sum() == 18
    assert not s.valid_mask[0, 0] and not s.valid_mask[2, 3]
    assert bx.Scan(np.full((2, 2), np.nan), 1e-6, 1e-6).valid_fraction == 0.0
    assert s.meta == {}


def test_default_meta_is_not_shared():
    a, b = bx.Scan(grid(), 1e-6, 1e-6), bx.Scan(grid(), 1e-6, 1e-6)
    a.meta["x"] = 1
    assert b.meta == {}


def test_copy_is_independent():
    s = bx.Scan(grid(), 1e-6, 2e-6, {"labels": {"exhibit": "E1"}, "processing": [{"step": "level"}]})
    c = s.copy()
    assert c is not s and c.heights is not s.heights
    assert np.array_equal(c.heights, s.heights, equal_nan=True)
    assert (c.dx, c.dy, c.meta) == (s.dx, s.dy, s.meta)
    c.heights[1, 1] = 42.0
    c.meta["labels"]["exhibit"] = "changed"
    c.meta["processing"].append({"step": "more"})
    assert s.heights[1, 1] == grid()[1, 1]
    assert s.meta == {"labels": {"exhibit": "E1"}, "processing": [{"step": "level"}]}


def test_repr_names_the_exhibit_and_size():
    s = bx.Scan(grid(4, 5), 6.25e-6, 6.25e-6, {"labels": {"exhibit": "E-17"}})
    r = repr(s)
    assert "E-17" in r and "4x5" in r and "6.25" in r and "90.0% valid" in r


def test_repr_survives_odd_labels():
    # a hostile ballistix.json / npz meta can hold anything under "labels"
    assert "Scan" in repr(bx.Scan(grid(), 1e-6, 1e-6, {"labels": "not a dict"}))


def test_plot_returns_axes_with_the_height_map():
    s = bx.Scan(grid(4, 5), 2e-6, 3e-6, {"labels": {"exhibit": "E1"}})
    ax = s.plot()
    try:
        assert isinstance(ax, Axes)
        img = ax.images[0].get_array()
        assert np.allclose(np.ma.filled(img, np.nan), s.heights * 1e6, equal_nan=True)
        assert ax.get_xlabel() == "x (mm)" and ax.get_ylabel() == "y (mm)"
        left, right, bottom, top = ax.images[0].get_extent()
        assert (right - left, bottom - top) == pytest.approx((5 * 2e-3, 4 * 3e-3))
        assert "E1" in ax.get_title()
    finally:
        plt.close(ax.figure)


def test_plot_on_given_axes_with_title():
    fig, given = plt.subplots()
    try:
        ax = bx.Scan(grid(), 1e-6, 1e-6).plot(ax=given, title="hello", cmap="gray")
        assert ax is given
        assert ax.get_title() == "hello"
        assert ax.images[0].get_cmap().name == "gray"
    finally:
        plt.close(fig)
