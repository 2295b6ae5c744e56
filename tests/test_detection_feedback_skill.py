"""The analysts' feedback is weighted by its out-of-fold skill over the unsupervised significance."""

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from tradesentry.detection.feedback import _cv_skill


def _model():
    return HistGradientBoostingClassifier(max_iter=50, max_leaf_nodes=8, min_samples_leaf=5, random_state=1)


def test_no_skill_when_the_labels_follow_the_unsupervised_rank():
    rng = np.random.default_rng(3)
    sig = rng.uniform(0, 10, 300)
    X = np.column_stack([sig, rng.normal(size=300)])
    y = (sig > 5).astype(int)  # the ranking already orders them perfectly: nothing to add
    assert _cv_skill(_model(), X, y, ["L_combined", "other"], 7) == 0.0


def test_skill_when_another_feature_tells_what_the_rank_does_not():
    rng = np.random.default_rng(4)
    sig = rng.uniform(0, 10, 300)
    other = rng.normal(size=300)
    X = np.column_stack([sig, other])
    y = (other > 0).astype(int)
    skill = _cv_skill(_model(), X, y, ["L_combined", "other"], 7)
    assert skill > 0.5
    assert skill == _cv_skill(_model(), X, y, ["L_combined", "other"], 7)  # seeded
