"""Continual-learning metrics against hand-computed accuracy matrices."""

import numpy as np
import pytest

from proxymix import metrics

# 3 tasks, rows = phases (row 0 = before training), columns = tasks.
# Task 0 rises from 80 to 90 after task 1 is trained, then drops to 60, so the
# max and first forgetting conventions disagree on it.
R3 = [
    [10.0, 20.0, 30.0],  # before training
    [80.0, 25.0, 35.0],  # after task 0
    [90.0, 70.0, 40.0],  # after task 1
    [60.0, 50.0, 85.0],  # after task 2 (final)
]


def test_avg_accuracy_is_mean_of_final_row():
    # (60 + 50 + 85) / 3 = 195 / 3 = 65
    assert metrics.avg_accuracy(R3) == pytest.approx(65.0)


def test_avg_incremental_averages_seen_tasks_per_phase():
    # t=1: 80; t=2: (90 + 70) / 2 = 80; t=3: (60 + 50 + 85) / 3 = 65 -> (80 + 80 + 65) / 3 = 75
    assert metrics.avg_incremental(R3) == pytest.approx(75.0)


def test_forgetting_max_uses_best_earlier_score():
    # task 0: max(R[1,0], R[2,0]) - R[3,0] = max(80, 90) - 60 = 30
    # task 1: max(R[2,1]) - R[3,1] = 70 - 50 = 20
    np.testing.assert_allclose(metrics.forgetting_per_task(R3, "max"), [30.0, 20.0])
    assert metrics.forgetting(R3) == pytest.approx(25.0)  # (30 + 20) / 2


def test_forgetting_first_uses_score_right_after_training():
    # task 0: R[1,0] - R[3,0] = 80 - 60 = 20
    # task 1: R[2,1] - R[3,1] = 70 - 50 = 20
    np.testing.assert_allclose(metrics.forgetting_per_task(R3, "first"), [20.0, 20.0])
    assert metrics.forgetting_first(R3) == pytest.approx(20.0)


def test_forgetting_max_ignores_final_row():
    # Task 0 peaks in the final row (95); that is not "history", so max(50) - 95 = -45 (improvement).
    R = [[0.0, 0.0], [50.0, 0.0], [95.0, 70.0]]
    np.testing.assert_allclose(metrics.forgetting_per_task(R, "max"), [-45.0])
    assert metrics.forgetting(R) == pytest.approx(-45.0)


def test_bwt():
    # ((60 - 80) + (50 - 70)) / 2 = (-20 - 20) / 2 = -20
    assert metrics.bwt(R3) == pytest.approx(-20.0)


def test_fwt_compares_score_just_before_training_to_base():
    # task 1: R[1,1] - R[0,1] = 25 - 20 = 5; task 2: R[2,2] - R[0,2] = 40 - 30 = 10 -> (5 + 10) / 2 = 7.5
    assert metrics.fwt(R3) == pytest.approx(7.5)


def test_bwt_is_negative_forgetting_first_on_random_matrix():
    rng = np.random.default_rng(0)
    R = rng.uniform(0.0, 100.0, size=(6, 5))
    assert metrics.bwt(R) == pytest.approx(-metrics.forgetting_first(R))
    # Max-over-history forgetting is never below first-value forgetting: the max includes R[i+1, i].
    assert np.all(metrics.forgetting_per_task(R, "max") >= metrics.forgetting_per_task(R, "first"))


def test_single_task_edge_case():
    R = [[12.0], [77.0]]
    assert metrics.avg_accuracy(R) == pytest.approx(77.0)
    assert metrics.avg_incremental(R) == pytest.approx(77.0)
    assert metrics.forgetting_per_task(R).shape == (0,)
    for fn in (metrics.forgetting, metrics.forgetting_first, metrics.bwt, metrics.fwt):
        assert fn(R) == 0.0


def test_summarize_keys_and_types():
    summary = metrics.summarize(R3)
    assert list(summary) == ["avg_accuracy", "avg_incremental", "forgetting", "forgetting_first", "bwt", "fwt"]
    assert all(type(v) is float for v in summary.values())
    assert summary == pytest.approx(
        {"avg_accuracy": 65.0, "avg_incremental": 75.0, "forgetting": 25.0, "forgetting_first": 20.0,
         "bwt": -20.0, "fwt": 7.5}
    )


def test_accepts_array_and_does_not_modify_input():
    R = np.array(R3)
    before = R.copy()
    assert metrics.summarize(R) == metrics.summarize(R3)
    np.testing.assert_array_equal(R, before)


@pytest.mark.parametrize(
    "bad",
    [
        [[1.0, 2.0], [3.0, 4.0]],  # square: missing the before-training row
        [[1.0, 2.0, 3.0]],  # (1, 3)
        [1.0, 2.0],  # 1-D
        np.zeros((1, 0)),  # T == 0
        np.zeros((2, 1, 1)),  # 3-D
    ],
)
def test_rejects_bad_shape(bad):
    with pytest.raises(ValueError, match=r"shape \(T \+ 1, T\)"):
        metrics.summarize(bad)


def test_rejects_nan():
    R = [[0.0, 0.0], [50.0, float("nan")], [40.0, 60.0]]
    with pytest.raises(ValueError, match="NaN"):
        metrics.avg_accuracy(R)


def test_rejects_unknown_convention():
    with pytest.raises(ValueError, match="convention"):
        metrics.forgetting_per_task(R3, "mean")
