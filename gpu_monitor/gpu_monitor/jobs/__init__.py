"""The background jobs: loops that apply the pure decisions of the package root to the world.

Each job is named for what it does and runs under `loops.every()` (once per interval; a failed
round is logged and tried again):

- `reconciler.py` (`Reconciler`): applies `reconcile.plan()` to the store and Docker;
- `idle_reclaimer.py` (`IdleReclaimer`): applies `idle.idle_step()`, writes the idle notices
  and stops servers through the hub;
- `usage_recorder.py` (`UsageRecorder`): writes the sampler's usage for accounting
  (`accounting.account()` reads it back) and the dashboard's history.

The decisions themselves (allocator.py, reconcile.py, idle.py, accounting.py) do no I/O. The
other I/O shells are the store (store.py), the allocation batcher (batcher.py: group commit,
driven by requests rather than a clock) and the handlers (handlers/). Jobs work on the
`Monitor` (monitor.py); nothing here imports app.py or handlers/.
"""
