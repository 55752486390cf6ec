"""Backward Search reproduction suite: the library behind the stage scripts A1…E2."""

# First, before any module loads torch (libgomp reads it once): whether torch's idle CPU threads
# spin or sleep, chosen from the share of a CPU its threads get (src/wait_policy.py).
import src.wait_policy  # noqa: F401
