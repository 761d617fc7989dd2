"""Packaging beyond what pyproject.toml can say: the node's side ships inside the wheel.

``remote/`` (the runner, its helpers and the real recipes: Python stdlib only)
stays its own room at the top of the checkout; in the wheel it is the package
``ari_console.remote``, found with ``importlib.resources`` and copied to nodes
from there. Everything else (metadata, dependencies, package data) is in
pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["ari_console*"]) + ["ari_console.remote", "ari_console.remote.recipes"],
    package_dir={"ari_console.remote": "remote"},
)
