"""E1 and what E2 and the explorer search with: the one search space (database, heads,
students), the ranking methods, their scores, the sweeps and one task evaluated end to end."""
