"""examples/notebook/submit_and_plot.ipynb, executed with nbclient and a real IPython kernel on the
local runtime (LocalClient: the engine and real torch processes, no cluster): its live display
updates in place while the digits example trains, client.progress() answers with the trainer's
reports, and the loss plot is written as a PNG."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "examples" / "notebook" / "submit_and_plot.ipynb"

pytestmark = pytest.mark.torch


def _texts(cell) -> str:
    out = []
    for o in cell.get("outputs", []):
        out.append(o.get("text", ""))
        data = o.get("data") or {}
        out.append(data.get("text/plain", ""))
        out.append(data.get("text/html", ""))
    return "\n".join(out)


def test_the_notebook_runs_on_the_local_runtime_and_writes_the_loss_plot(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINYARD_NOTEBOOK_RUNTIME", "local")
    monkeypatch.setenv("TRAINYARD_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.setenv("TRAINYARD_NOTEBOOK_EPOCHS", "4")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    try:
        client.execute()
    finally:
        nbformat.write(nb, tmp_path / "executed.ipynb")  # the artifact, with every output
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []
    png = tmp_path / "loss.png"
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    wait_cell = next(c for c in code if "client.wait(" in c.source)
    shown = _texts(wait_cell)
    # the live display (a rich panel, updated in place through one display id) ended on the last step
    assert "digits-ddp" in shown and "Succeeded" in shown and "step 92/92 (100%)" in shown, shown[-2000:]
    assert "('Succeeded', 'all 2 workers succeeded')" in shown
    progress_cell = next(c for c in code if "client.progress(" in c.source)
    assert "step 92/92 (100%), ETA 0s" in _texts(progress_cell)
    plot_cell = next(c for c in code if "plot_loss(" in c.source)
    images = [o["data"]["image/png"] for o in plot_cell.get("outputs", []) if "image/png" in (o.get("data") or {})]
    assert images and base64.b64decode(images[0])[:8] == b"\x89PNG\r\n\x1a\n"  # the figure, inline too
