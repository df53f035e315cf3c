"""Write bytecode for what the single-user server imports when it starts (run as root at build).

The server runs as jovyan, who cannot write to /opt/jupyter: without bytecode in the image every
server start compiles these modules again (~1.5 s of a ~3 s start on a small host). Initialising
a server (every enabled extension linked and loaded, nothing served) imports exactly that set;
compiling all of /opt/jupyter instead would add ~70 MB for modules a start never touches.
"""

import os
import shutil
import tempfile

home = tempfile.mkdtemp(prefix="precompile-")
os.environ.update(HOME=home, JUPYTER_RUNTIME_DIR=home, JUPYTER_DATA_DIR=home)
os.chdir(home)
try:
    import jupyterhub.singleuser.app  # noqa: F401 - the hub's single-user wrapper
    from jupyter_server.serverapp import ServerApp

    app = ServerApp()
    app.initialize(argv=["--allow-root", "--ip=127.0.0.1", "--port=0", "--ServerApp.open_browser=False"])
finally:
    shutil.rmtree(home, ignore_errors=True)
