"""Test fixtures: the real CASA, sshd and Slurm live in tests/fixtures/."""

pytest_plugins = ["tests.fixtures.casa", "tests.fixtures.sshd", "tests.fixtures.slurm", "tests.fixtures.qa2_images", "tests.fixtures.archive"]

# Scripts the tests run as programs (stand-ins, recipes, corpus makers): never imported for doctests.
collect_ignore_glob = ["data/*"]
