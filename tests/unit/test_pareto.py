"""Pareto fronts on constructed cases: directions, ties, missing values, three objectives."""

import pytest

from edgec.report.pareto import dominates, pareto_front

pytestmark = pytest.mark.unit


def test_two_objectives_both_minimised():
    # (latency, size): b beats a on both; c and d trade off; e is beaten by d.
    points = [(5, 50), (4, 40), (1, 90), (8, 10), (9, 12)]
    assert pareto_front(points, [False, False]) == [1, 2, 3]


def test_accuracy_maximised_latency_and_size_minimised():
    points = [
        (99.4, 6.7, 78),  # fp32: most accurate
        (99.4, 3.3, 25),  # int8: as accurate, faster and smaller -> beats fp32
        (97.0, 2.0, 14),  # int4: least accurate but fastest and smallest
        (96.0, 3.5, 12),  # pruned: less accurate and slower than int4 but the smallest -> on the front
        (95.0, 3.6, 26),  # beaten by int8 on everything
    ]
    assert pareto_front(points, [True, False, False]) == [1, 2, 3]


def test_flipping_a_direction_changes_the_front():
    points = [(1, 1), (2, 2)]
    assert pareto_front(points, [False, False]) == [0]
    assert pareto_front(points, [True, True]) == [1]
    assert pareto_front(points, [True, False]) == [0, 1]


def test_equal_points_do_not_dominate_each_other():
    points = [(1.0, 2.0), (1.0, 2.0), (2.0, 3.0)]
    assert pareto_front(points, [False, False]) == [0, 1]
    assert not dominates(points[0], points[1], [False, False])


def test_a_point_with_a_missing_value_is_never_on_the_front():
    points = [(None, 1.0), (2.0, 2.0), (3.0, 1.0)]
    assert pareto_front(points, [False, False]) == [1, 2]
    assert pareto_front([], [False]) == []
