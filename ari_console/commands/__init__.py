"""Sub-command groups of `ari`, one module each; `cli.py` mounts them."""
