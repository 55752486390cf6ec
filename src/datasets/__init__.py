"""Readers of the raw dataset formats; each turns its source into the common processed format."""
