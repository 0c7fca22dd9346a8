"""How a version is judged: estimators, evaluation sets, version evaluation, the gate and the red team."""
