"""Widgets of the operations console, one per file."""
