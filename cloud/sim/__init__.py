"""`litefleet sim`: simulated devices that speak the real contract, for fleet-scale tests.

network.py   many paho clients on one asyncio loop
link.py      one device's MQTT session, retained state, last will and outbox
download.py  resumable HTTP download with a hard length cap
update.py    model checks and rebuilding (shared.codec), the shared model cache
device.py    one device: state, telemetry, the update state machine, faults
fleet.py     N devices: ramp-up, fault assignment, run, stop, summary
audit.py     gaps in the devices' seqs in the store
"""

from cloud.sim.fleet import Fleet, SimOptions, device_ids, raise_file_limit

__all__ = ["Fleet", "SimOptions", "device_ids", "raise_file_limit"]
