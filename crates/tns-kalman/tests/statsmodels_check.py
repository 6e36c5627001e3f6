"""statsmodels' UnobservedComponents on the case TNS writes: log-likelihood and filtered
state means at the given variances, and the maximum-likelihood fit.

    python statsmodels_check.py CASE.json  →  JSON on stdout
"""

import json
import sys

import numpy as np
from statsmodels.tsa.statespace.structural import UnobservedComponents


def main():
    case = json.loads(open(sys.argv[1]).read())
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
    at = model.filter(np.asarray(values))
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
