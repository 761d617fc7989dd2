"""Test fixtures: the real CASA, sshd and Slurm live in tests/fixtures/."""

pytest_plugins = ["tests.fixtures.casa"]
