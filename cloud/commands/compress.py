"""`litefleet compress`: registered from the compression worker's own CLI module."""

from cloud.compress.cli import register

__all__ = ["register"]
