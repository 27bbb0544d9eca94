"""The official warm-up + linear-decay schedule at chosen epochs, and the other options."""
import pytest

from benchmarks.schedule import epochs_to_train, lr_factor


@pytest.mark.parametrize("epoch, factor", [(0, 0.0), (1, 0.2), (4, 0.8), (5, 94 / 95), (6, 93 / 95), (50, 49 / 95),
                                           (98, 1 / 95), (99, 0.0)])
def test_official_schedule_values(epoch, factor):
    # notebook: e < 5: e/5, else 1 - (e + 1 - 5) / 95
    assert lr_factor("official", epoch, 100, 5) == pytest.approx(factor, abs=1e-15)


def test_notebook_runs_99_epochs_and_stop_epoch_keeps_the_schedule():
    assert epochs_to_train(100, skip_final_epoch=True) == 99
    assert epochs_to_train(100, skip_final_epoch=False) == 100
    assert epochs_to_train(100, True, stop_epoch=3) == 3
    # stopping early does not change the factors of the epochs that do run
    assert [lr_factor("official", e, 100, 5) for e in range(3)] == [0.0, 0.2, 0.4]


def test_constant_and_cosine():
    assert [lr_factor("constant", e, 10, 0) for e in (0, 9)] == [1.0, 1.0]
    assert lr_factor("cosine", 2, 10, 2) == pytest.approx(1.0)
    assert lr_factor("cosine", 6, 10, 2) == pytest.approx(0.5)


def test_bad_schedule_arguments():
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_factor("step", 0, 10, 0)
    with pytest.raises(ValueError, match="warmup"):
        lr_factor("official", 0, 5, 5)
    with pytest.raises(ValueError, match="stop_epoch"):
        epochs_to_train(10, False, stop_epoch=-1)


def test_short_runs_fall_back_to_constant():
    from benchmarks.schedule import short_run

    assert short_run("official", 1, 5) and short_run("official", 6, 5)
    assert not short_run("official", 7, 5) and not short_run("constant", 1, 0)
