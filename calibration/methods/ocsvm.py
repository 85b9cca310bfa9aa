"""Fitting the one-class SVM (inspector/methods/ocsvm.py) on pooled image features with
scikit-learn's OneClassSVM (libsvm). The result is plain arrays (support vectors, dual
coefficients, intercept, gamma, standardisation): the daemon scores it with numpy."""
from __future__ import annotations

import numpy as np

from calibration.methods import Progress
from calibration.methods.training import floor_std
from inspector.methods import ocsvm


def fit_svm(features: np.ndarray, config: ocsvm.Config):
    """(sklearn OneClassSVM, mean, std) fitted on features float32 [N, D, h, w]."""
    from sklearn.svm import OneClassSVM

    c = config.ocsvm
    x = ocsvm.pool_features(features, c.pooling)
    mean = x.mean(0)
    std = floor_std(x.std(0))
    z = (x - mean) / std
    # "scale" as scikit-learn defines it, computed here so the stored gamma is explicit
    gamma = 1.0 / (z.shape[1] * max(float(z.var()), 1e-12)) if c.gamma == "scale" else float(c.gamma)
    svm = OneClassSVM(kernel="rbf", nu=c.nu, gamma=gamma)
    svm.fit(z)
    return svm, mean, std


def fit(features: np.ndarray, config: ocsvm.Config, seed: int, progress: Progress) -> ocsvm.State:
    """features float32 [N, D, h, w] -> the state (libsvm's one-class solver is deterministic:
    ``seed`` is not used)."""
    progress.total(1)
    svm, mean, std = fit_svm(features, config)
    progress.update(1)
    params = ocsvm.Params(pooling=config.ocsvm.pooling, nu=config.ocsvm.nu,
                          support_vectors=int(len(svm.support_vectors_)), images_seen=int(len(features)),
                          feature_dim=int(features.shape[1]))
    return ocsvm.State(params, svm.support_vectors_.astype(np.float64), svm.dual_coef_[0].astype(np.float64),
                       float(svm.intercept_[0]), float(svm.gamma), mean, std)
