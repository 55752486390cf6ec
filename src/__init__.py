"""Backward Search reproduction suite: the library behind the stage scripts A1…E2."""

import os

# Idle OpenMP threads sleep instead of spinning (read once, when torch loads OpenMP: the stages
# import src first). On a shared CPU a spinning thread takes the core its partner waits for, and
# every small operation then waits for a descheduled thread (bench/RESULTS.md, "Threads").
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
