"""Fitter for the one-class SVM (hypersphere / ocsvm) on pooled image features, scikit-learn's
OneClassSVM (libsvm). The result is stored as plain arrays (support vectors, dual coefficients,
intercept, gamma, standardisation): the daemon scores it with numpy, without scikit-learn."""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from calibration.fitters.training import floor_std
from inspector.scoring.hypersphere import pool_features


class OcsvmFitter:
    scorer_type = "hypersphere"

    def __init__(self, config, seed: int = 0):
        self.config = config  # settings.HypersphereScorerConfig with method ocsvm
        self.seed = seed  # libsvm's one-class solver is deterministic; kept for the interface

    def fit_svm(self, features: np.ndarray):
        """(sklearn OneClassSVM, mean, std) fitted on features float32 [N, D, h, w]."""
        from sklearn.svm import OneClassSVM

        c = self.config.ocsvm
        x = pool_features(features, c.pooling)
        mean = x.mean(0)
        std = floor_std(x.std(0))
        z = (x - mean) / std
        # "scale" as scikit-learn defines it, computed here so the stored gamma is explicit
        gamma = 1.0 / (z.shape[1] * max(float(z.var()), 1e-12)) if c.gamma == "scale" else float(c.gamma)
        svm = OneClassSVM(kernel="rbf", nu=c.nu, gamma=gamma)
        svm.fit(z)
        return svm, mean, std

    def fit(self, features: np.ndarray, progress: Optional[Callable[[int], None]] = None,
            total: Optional[Callable[[int], None]] = None) -> tuple[dict, dict[str, np.ndarray]]:
        if total:
            total(1)
        svm, mean, std = self.fit_svm(features)
        if progress:
            progress(1)
        c = self.config.ocsvm
        arrays = {"ocsvm_support": svm.support_vectors_.astype(np.float64),
                  "ocsvm_dual_coef": svm.dual_coef_[0].astype(np.float64),
                  "ocsvm_intercept": np.array([svm.intercept_[0]], np.float64),
                  "ocsvm_gamma": np.array([svm.gamma], np.float64),
                  "ocsvm_scale_mean": mean, "ocsvm_scale_std": std}
        params = {"method": "ocsvm", "pooling": c.pooling, "nu": c.nu, "feature_name": "features",
                  "support_vectors": int(len(svm.support_vectors_)), "images_seen": int(len(features)),
                  "feature_dim": int(features.shape[1])}
        return params, arrays
