"""Over-the-air model updates: verify, fetch, validate, install, hot swap, probation, commit
or roll back. See `agent.update.updater` for the pipeline and crash recovery.

    updater = Updater(config, db, outbox, on_state_change)
    model_path = updater.recover()           # at start: settle the journal, pick the model
    updater.attach(loop)                     # once the loop runs: hot swap + probation
    updater.handle_deployment(data)          # from a worker thread, per `desired` message
    updater.supersede(data)                  # any thread: a newer deployment cancels a download
    updater.interrupt()                      # at stop: a running download ends, kept to resume
    updater.tick()                           # periodically: probation verdicts, housekeeping
    read_update_state(config)                # (active model, journal phase) for `status`
"""

from __future__ import annotations

from agent.update.state import read_update_state
from agent.update.updater import UpdateOutcome, Updater

__all__ = ["UpdateOutcome", "Updater", "read_update_state"]
