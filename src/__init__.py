"""Backward Search reproduction suite: the library behind the stage scripts A1…E2."""

import os

# torch's CPU threads (OpenMP) spin while they wait for each other by default. On a machine whose
# cores are busy with other work that is ruinous: a D1 epoch took 48 s with spinning threads and
# 1.3 s with sleeping ones, with the same result (bench/RESULTS.md). Set here, before any module
# loads torch (libgomp reads it once); a policy the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
