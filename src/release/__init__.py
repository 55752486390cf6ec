"""The authors' released artifacts (SPEC §10): read safely, turned into the suite's own files."""
