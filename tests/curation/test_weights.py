import numpy as np
import pytest

from services.curation.weights import (
    AUTONOMOUS,
    DEMO,
    INTERVENTION,
    PRE_INTERVENTION,
    get_scheme,
    label_steps,
)


def _deployment(n=100, takeovers=((40, 60),)):
    source = np.array(["policy"] * n, dtype=object)
    for start, end in takeovers:
        source[start:end] = "operator"
    return source


def test_labels_follow_who_was_in_control():
    classes = label_steps("deployment", _deployment(), window=15)
    assert (classes[:25] == AUTONOMOUS).all()
    assert (classes[25:40] == PRE_INTERVENTION).all()
    assert (classes[40:60] == INTERVENTION).all()
    assert (classes[60:] == AUTONOMOUS).all()
    assert (label_steps("demo", _deployment()) == DEMO).all()


def test_pre_intervention_window_stops_at_an_earlier_takeover():
    classes = label_steps("deployment", _deployment(takeovers=((10, 20), (25, 30))), window=15)
    assert (classes[10:20] == INTERVENTION).all()
    assert (classes[20:25] == PRE_INTERVENTION).all()
    assert (classes[0:10] == PRE_INTERVENTION).all()


def test_sirius_gives_interventions_half_the_loss_and_pre_intervention_almost_none():
    classes = np.concatenate(
        [np.full(500, DEMO), label_steps("deployment", _deployment(200, ((50, 70), (120, 130))))]
    ).astype(object)
    failed = np.zeros(len(classes), dtype=bool)
    weights = get_scheme("sirius").weights(classes, failed)
    total = weights.sum()
    assert weights.mean() == pytest.approx(1.0, rel=1e-5)
    assert weights[classes == INTERVENTION].sum() / total == pytest.approx(0.5, rel=1e-5)
    assert weights[classes == PRE_INTERVENTION].sum() / total == pytest.approx(0.002, rel=1e-4)
    # demos and autonomous steps share the rest at the same per-step weight
    assert len(set(np.round(weights[(classes == DEMO) | (classes == AUTONOMOUS)], 6))) == 1


def test_failed_episodes_autonomous_steps_are_dropped_but_their_interventions_kept():
    classes = label_steps("deployment", _deployment()).astype(object)
    failed = np.ones(len(classes), dtype=bool)
    weights = get_scheme("sirius").weights(classes, failed)
    assert (weights[classes == AUTONOMOUS] == 0).all()
    assert (weights[classes == INTERVENTION] > 0).all()


def test_hg_dagger_keeps_only_demos_and_interventions():
    classes = np.concatenate([np.full(50, DEMO), label_steps("deployment", _deployment())]).astype(
        object
    )
    weights = get_scheme("hg-dagger").weights(classes, np.zeros(len(classes), dtype=bool))
    kept = set(classes[weights > 0])
    assert kept == {DEMO, INTERVENTION}


def test_demo_only_dataset_weights_every_step_one():
    classes = np.full(30, DEMO, dtype=object)
    weights = get_scheme("sirius").weights(classes, np.zeros(30, dtype=bool))
    assert np.allclose(weights, 1.0)


def test_unknown_scheme_names_the_closest():
    with pytest.raises(ValueError, match="did you mean 'sirius'"):
        get_scheme("sirus")
