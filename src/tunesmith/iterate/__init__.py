"""Iterate and decide: advice before training (advise), hyperparameter sweeps (sweep) and the
per-example export a user fixes and trains on again (fixlist)."""
