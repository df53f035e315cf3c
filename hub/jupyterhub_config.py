# JupyterHub configuration for gpuhub. Thin on purpose: every setting is read and validated by
# gpuhub.settings (documented in config/gpuhub.env.example) and applied by gpuhub.configure.
import sys

from gpu_monitor.env import ConfigError
from gpuhub.configure import configure
from gpuhub.settings import load_settings

c = get_config()  # noqa: F821 (provided by JupyterHub when it loads this file)

try:
    configure(c, load_settings(), check_crypt_key=True)
except ConfigError as e:
    print(f"gpuhub: configuration error: {e}", file=sys.stderr)
    sys.exit(1)
