"""Sweeps: a study over preset keys on Optuna; each trial an ordinary run of a job."""
