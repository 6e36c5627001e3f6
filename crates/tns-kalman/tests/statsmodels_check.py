"""statsmodels' UnobservedComponents on the case TNS writes: log-likelihood and filtered
state means at the given variances, and the maximum-likelihood fit. statsmodels has no
damped trend in UnobservedComponents; the `damped` case writes the model out as a
statsmodels state-space model (MLEModel) with the same conventions (approximate diffuse
start of variance 1e6, the first k_states observations burnt in) and uses its Kalman filter
and its optimizer.

    python statsmodels_check.py CASE.json  →  JSON on stdout
"""

import json
import sys

import numpy as np
from statsmodels.tsa.statespace.mlemodel import MLEModel
from statsmodels.tsa.statespace.structural import UnobservedComponents


class DampedTrendSeasonal(MLEModel):
    """Level, damped slope (level' = level + phi slope, slope' = phi slope) and
    trigonometric seasonals, each harmonic a rotating pair observed through its first state."""

    def __init__(self, y, seasons):
        self.harmonics = [(p, j) for p, k in seasons for j in range(1, k + 1)]
        self.seasons = seasons
        k_states = 2 + 2 * len(self.harmonics)
        super().__init__(y, k_states=k_states, k_posdef=k_states)
        design = np.zeros(k_states)
        design[0] = 1.0
        design[2::2] = 1.0
        self["design", 0, :] = design
        self["selection"] = np.eye(k_states)
        transition = np.zeros((k_states, k_states))
        transition[0, 0] = 1.0
        for i, (period, j) in enumerate(self.harmonics):
            angle = 2.0 * np.pi * j / period
            c, s = np.cos(angle), np.sin(angle)
            transition[2 + 2 * i : 4 + 2 * i, 2 + 2 * i : 4 + 2 * i] = [[c, s], [-s, c]]
        self["transition"] = transition
        self.ssm.initialize_approximate_diffuse(1e6)
        self.ssm.loglikelihood_burn = k_states

    @property
    def param_names(self):
        seasonal = [f"sigma2.season.{p}" for p, _ in self.seasons]
        return ["sigma2.irregular", "sigma2.level", "sigma2.trend", *seasonal, "damping"]

    @property
    def start_params(self):
        var = np.var(np.diff(self.endog[:, 0]))
        return np.r_[np.full(len(self.param_names) - 1, var / (len(self.param_names) - 1)), 0.8]

    def transform_params(self, unconstrained):
        return np.r_[unconstrained[:-1] ** 2, 1.0 / (1.0 + np.exp(-unconstrained[-1]))]

    def untransform_params(self, constrained):
        phi = constrained[-1]
        return np.r_[constrained[:-1] ** 0.5, np.log(phi / (1.0 - phi))]

    def update(self, params, **kwargs):
        params = super().update(params, **kwargs)
        observation, level, slope, *seasonal, phi = params
        self["obs_cov", 0, 0] = observation
        pairs = [v for v, (_, k) in zip(seasonal, self.seasons) for _ in range(2 * k)]
        self["state_cov"] = np.diag([level, slope, *pairs])
        self["transition", 0, 1] = phi
        self["transition", 1, 1] = phi


def damped(case):
    model = DampedTrendSeasonal(np.asarray(case["y"], dtype=float), case["seasons"])
    given = case["params"]
    values = [given["observation"], given["level"], given["slope"], *given["seasonal"],
              given["damping"]]
    return model, np.asarray(values)


def main():
    case = json.loads(open(sys.argv[1]).read())
    if case["trend"] == "damped":
        model, values = damped(case)
        return report(model, values)
    y = np.asarray(case["y"], dtype=float)
    exog = np.asarray(case["exog"], dtype=float) if case.get("exog") else None
    model = UnobservedComponents(
        y,
        exog=exog,
        level=case["trend"],
        freq_seasonal=[{"period": p, "harmonics": k} for p, k in case["seasons"]],
        mle_regression=True,
    )
    given = case["params"]
    values = []
    for name in model.param_names:
        if name == "sigma2.irregular":
            values.append(given["observation"])
        elif name == "sigma2.level":
            values.append(given["level"])
        elif name == "sigma2.trend":
            values.append(given["slope"])
        elif name.startswith("sigma2.freq_seasonal"):
            values.append(given["seasonal"].pop(0))
        elif name.startswith("beta."):
            values.append(given["regression"].pop(0))
        else:
            raise SystemExit(f"unexpected parameter {name}")
    return report(model, np.asarray(values))


def report(model, values):
    at = model.filter(values)
    fitted = model.fit(disp=False, maxiter=500)
    print(
        json.dumps(
            {
                "param_names": model.param_names,
                "loglike": float(at.llf),
                "filtered": at.filtered_state.T.ravel().tolist(),
                "states": int(model.k_states),
                "loglikelihood_burn": int(at.loglikelihood_burn),
                "fitted_loglike": float(fitted.llf),
                "fitted_params": fitted.params.tolist(),
            }
        )
    )


if __name__ == "__main__":
    main()
