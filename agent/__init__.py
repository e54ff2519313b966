"""The LiteFleet device agent: inference loop, telemetry, and verified over-the-air updates."""

__version__ = "0.1.0"
