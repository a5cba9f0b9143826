"""The reliability tier: faults, durability, secrets and exposure, against a stack deployed
through the real engine. Each scenario records the figure it measured next to its target with
the `record` fixture (root conftest.py); scripts/reliability-report turns them into
docs/reliability.md."""
