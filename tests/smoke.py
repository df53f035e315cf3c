"""Running an image's smoke notebook inside the built image and reading its checked result.

Each single-user image ships notebooks in /opt/gpuhub/smoke/. Their last cell prints one line
`GPUHUB_RESULT {json}` with at least: "ok" (every check passed), "path" ("gpu" or "cpu"),
"device" (what computed) and "checks" ({name: {"ok": bool, "max_abs_err": float}}). The
notebook is executed with nbclient (`jupyter execute`) in a throwaway container without network;
the executed notebook is read back and the line parsed, so a test asserts the checked result,
not merely that nothing raised. Used by tests/docker (CPU/PoCL) and tests/gpu (NVIDIA).
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
from pathlib import Path

MARKER = "GPUHUB_RESULT "


def result_from_notebook(notebook: dict) -> dict:
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []):
            text = output.get("text", "")
            text = "".join(text) if isinstance(text, list) else text
            for line in text.splitlines():
                if line.startswith(MARKER):
                    return json.loads(line[len(MARKER):])
    raise AssertionError("the notebook printed no GPUHUB_RESULT line")


def run_smoke_in_image(image: str, notebook: str, docker_args: tuple[str, ...] = (), timeout: float = 600) -> dict:
    """Execute /opt/gpuhub/smoke/<notebook> in `image`; return its GPUHUB_RESULT."""
    script = (f"jupyter execute --output=/tmp/executed /opt/gpuhub/smoke/{notebook} >&2 "
              "&& cat /tmp/executed.ipynb")
    r = subprocess.run(["docker", "run", "--rm", "--network", "none", "--cap-drop", "ALL",
                        "--security-opt", "no-new-privileges:true", *docker_args, image, "sh", "-c", script],
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"smoke notebook {notebook} failed in {image}:\n{r.stderr[-4000:]}")
    return result_from_notebook(json.loads(r.stdout))


def run_notebook_in_process(path: str | Path) -> dict:
    """Run a smoke notebook's code cells in order in this interpreter; return its GPUHUB_RESULT.

    For machines without Docker or a Jupyter kernel (the NVIDIA machine of tests/gpu): the
    notebooks are plain Python on purpose (no magics), so executing their cells in one
    namespace is what a kernel would do.
    """
    notebook = json.loads(Path(path).read_text())
    namespace: dict = {"__name__": "__main__"}
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            exec(compile(source, f"{Path(path).name}:{cell.get('id', '?')}", "exec"), namespace)  # noqa: S102
        cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": stdout.getvalue()}]
        print(stdout.getvalue(), end="")
    return result_from_notebook(notebook)
