"""The workstation driver: a job's workers as local process trees, decided by the same engine."""
