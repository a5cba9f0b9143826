"""Benchmarks: the plan's docker compose and `pulumi up` side by side (scripts/bench, docs/benchmarks.md)."""
