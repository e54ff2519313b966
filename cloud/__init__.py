"""The LiteFleet operator side: compression, releases, rollouts, ingest and the fleet view."""
