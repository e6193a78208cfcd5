"""The least-squares refit after pruning: what it keeps where the calibration data say nothing."""

from __future__ import annotations

import numpy as np

from edgec.compiler.pruning.reconstruct import _fit, _split


def _narrow_calibration(rng, rows: int, features: int, rank: int) -> np.ndarray:
    """Rows that span only ``rank`` of ``features`` directions, like a few photos of one kind."""
    return rng.normal(size=(rows, rank)) @ rng.normal(size=(rank, features))


def test_the_refit_keeps_the_layers_own_weights_where_the_calibration_data_do_not_reach():
    rng = np.random.default_rng(0)
    features, outputs = 24, 6
    kept = rng.normal(size=(features, outputs))  # the pruned layer's weights on its kept inputs
    removed = rng.normal(size=(features, outputs)) * 0.3  # what the removed channels added, seen through the kept
    x = _narrow_calibration(rng, 60, features, rank=6)
    y = x @ (kept + removed) + 0.5
    matrix, bias, label = _fit(x, y, kept, np.zeros(outputs), True, np.arange(len(x)))
    assert label.startswith("refit"), label  # the data call for a refit: the removed channels' share is predictable
    # directions the calibration rows never take: the refit has no evidence there and must leave the weights alone
    basis, _, _ = np.linalg.svd(x.T @ x)
    unseen = basis[:, 6:]
    assert np.allclose(unseen.T @ matrix, unseen.T @ kept, atol=1e-6)
    # so on inputs of another kind the refit is no worse than the plain weights (a ridge towards zero was far worse)
    broad = rng.normal(size=(200, features))
    want = broad @ (kept + removed) + 0.5
    refit_error = np.mean((broad @ matrix + bias - want) ** 2)
    plain_error = np.mean((broad @ kept + 0.5 - want) ** 2)
    assert refit_error < plain_error


def test_the_held_out_rows_are_whole_samples():
    samples = np.repeat(np.arange(10), 7)  # 7 positions of each of 10 images
    train, test = _split(samples)
    assert set(samples[train]).isdisjoint(samples[test])
    assert len(set(samples[test])) == 2 and len(test) == 14
    few = np.array([0, 0, 1, 1])  # under five samples: rows are held out one by one
    train, test = _split(few)
    assert len(test) == 1 and len(train) == 3


def test_a_single_row_is_fitted_and_judged_on_itself():
    """One calibration sample gives a Gemm one row: holding it out would leave nothing to fit (NaN weights)."""
    with np.errstate(all="raise"):
        matrix, bias, _ = _fit(np.ones((1, 3)), np.full((1, 2), 2.0), np.zeros((3, 2)), np.zeros(2), True,
                               np.arange(1))
    assert np.all(np.isfinite(matrix)) and np.all(np.isfinite(bias))
