"""What runs on a node: the job runner and its recipes (Python stdlib only, plus CASA)."""
