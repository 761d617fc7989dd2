"""Real daemons started on this machine: OpenSSH servers (one per SSH node) and a single-node Slurm.

``ari demo`` builds its SSH and Slurm nodes from them, and the tests' fixtures
(``tests/fixtures/``) start the same daemons, so the demo and the tests meet
the real sshd and Slurm, never a stand-in. Nothing system-wide is touched:
every daemon lives in its own directory with its own keys, config and logs.
"""
