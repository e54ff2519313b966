"""The LiteFleet operator side: compression, releases, rollouts, ingest and the fleet view."""

__version__ = "0.1.0"
