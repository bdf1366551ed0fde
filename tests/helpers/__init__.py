"""Helpers shared by several test modules (pytest puts ``tests/`` on the import path)."""
