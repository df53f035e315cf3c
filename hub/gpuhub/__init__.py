"""gpuhub: a GPU-enabled, multi-user JupyterHub (hub-side package)."""

__version__ = "0.1.0"
