"""The toy embedding space of the Backward Search / student tests (it lives in src/toy.py)."""

from src.toy import accuracy, toy_space, train_heads

__all__ = ["accuracy", "toy_space", "train_heads"]
