"""What people read: E1's tables, E2's figures and REPORT.md, built from the artifacts on disk."""
