"""Backward Search reproduction suite: the library behind the stage scripts A1…E2."""
