"""The HTTP handlers, one module per resource; app.py routes to them.

`base.py`: what every handler shares (JSON errors, logs without query strings, the hub's
authentication and scopes). `health.py`: api/health. `devices.py`: api/devices, api/history.
`allocations.py`: api/allocations. `accounting.py`: api/accounting. `metrics.py`: metrics.
`dashboard.py`: the page at the root. Handlers reach the service through the `Monitor`
(monitor.py) in the application's settings, never through jobs/.
"""
