"""Tests for mtlzoo.metrics_delta.delta_m."""

import math

import numpy as np
import pytest

from mtlzoo.metrics_delta import delta_m

# NYUv2 single-task baselines and the Nash-MTL row of Navon et al., ICML 2022, Table 2:
# mIoU, pix acc, abs err, rel err, angle mean, angle median, <11.25, <22.5, <30.
STL = (38.30, 63.76, 0.6754, 0.2780, 25.01, 19.21, 30.14, 57.20, 69.15)
NASH_MTL = (40.13, 65.93, 0.5261, 0.2171, 25.26, 20.08, 28.40, 55.47, 68.15)
HIGHER = (True, True, False, False, False, False, True, True, True)


def test_nash_mtl_row_of_the_published_table():
    value = delta_m(NASH_MTL, STL, HIGHER)
    assert isinstance(value, float)
    assert value == pytest.approx(-4.05, abs=0.01)  # the paper prints -4.04, a mean over seeds


def test_matches_the_formula_term_by_term():
    expected = np.mean([(-1.0) ** h * (m - s) / s for m, s, h in zip(NASH_MTL, STL, HIGHER)]) * 100
    assert delta_m(NASH_MTL, STL, HIGHER) == pytest.approx(expected, rel=1e-12)


def test_sign_convention_lower_is_better():
    assert delta_m([110.0], [100.0], [True]) == pytest.approx(-10.0)   # higher accuracy: improvement
    assert delta_m([90.0], [100.0], [True]) == pytest.approx(10.0)
    assert delta_m([0.9], [1.0], [False]) == pytest.approx(-10.0)      # lower error: improvement
    assert delta_m([1.1], [1.0], [False]) == pytest.approx(10.0)
    assert delta_m(STL, STL, HIGHER) == 0.0


def test_dicts_numpy_arrays_and_int_flags():
    keys = [f"m{i}" for i in range(len(STL))]
    mtl = {k: v for k, v in zip(keys, NASH_MTL)}
    stl = {k: v for k, v in zip(reversed(keys), reversed(STL))}  # key order does not matter
    higher = {k: h for k, h in zip(keys, HIGHER)}
    expected = delta_m(NASH_MTL, STL, HIGHER)
    assert delta_m(mtl, stl, higher) == pytest.approx(expected)
    assert delta_m(np.array(NASH_MTL), np.array(STL), np.array(HIGHER)) == pytest.approx(expected)
    assert delta_m(list(NASH_MTL), list(STL), [int(h) for h in HIGHER]) == pytest.approx(expected)


def test_length_mismatch():
    with pytest.raises(ValueError, match="same length"):
        delta_m(NASH_MTL[:-1], STL, HIGHER)
    with pytest.raises(ValueError, match="same length"):
        delta_m(NASH_MTL, STL, HIGHER[:-1])


def test_key_mismatch():
    with pytest.raises(ValueError, match="same metric names"):
        delta_m({"a": 1.0, "b": 2.0}, {"a": 1.0, "c": 2.0}, {"a": True, "b": True})
    with pytest.raises(ValueError, match="same keys"):
        delta_m({"a": 1.0, "b": 2.0}, {"a": 1.0, "b": 2.0}, {"a": True})


def test_mixed_or_wrong_types():
    with pytest.raises(TypeError):
        delta_m({"a": 1.0}, [1.0], [True])
    with pytest.raises(TypeError, match="higher_is_better"):
        delta_m({"a": 1.0}, {"a": 1.0}, [True])
    with pytest.raises(TypeError):
        delta_m(1.0, 1.0, True)
    with pytest.raises(TypeError, match="bool"):
        delta_m([1.0], [1.0], ["yes"])
    with pytest.raises(TypeError, match="real number"):
        delta_m(["1.0"], [1.0], [True])


def test_zero_baseline():
    with pytest.raises(ValueError, match=r"stl\[1\] is 0"):
        delta_m([1.0, 2.0], [1.0, 0.0], [True, False])
    with pytest.raises(ValueError, match="is 0"):
        delta_m({"err": 1.0}, {"err": 0.0}, {"err": False})


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_inf(bad):
    with pytest.raises(ValueError, match="finite"):
        delta_m([bad, 1.0], [1.0, 1.0], [True, True])
    with pytest.raises(ValueError, match="finite"):
        delta_m([1.0, 1.0], [1.0, bad], [True, True])


def test_empty():
    with pytest.raises(ValueError, match="no metrics"):
        delta_m([], [], [])
