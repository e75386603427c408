"""Run directories: their files, status and lock, following a run, the runs table, TensorBoard."""
