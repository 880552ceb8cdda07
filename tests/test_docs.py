"""The documentation runs: the tutorial notebook executes, the API reference builds with warnings as errors,
and every Python block of the README runs."""

from __future__ import annotations

import re
import subprocess
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from .conftest import ROOT

DOCS = ROOT / "docs"


def test_tutorial_notebook_executes(tmp_path):
    notebook = nbformat.read(DOCS / "tutorial.ipynb", as_version=4)
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, naming the cell, when one fails
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    imports = "".join(out.get("text", "") for out in notebook.cells[1].outputs if out.get("name") == "stderr")
    assert "tqdm" not in imports and "rlae_sc" not in imports  # importing rlae_sc in a notebook is silent
    text = "".join(out.get("text", "") for out in outputs)
    accuracy = float(re.search(r"second batch: ([\d.]+)% correct", text).group(1))
    assert accuracy > 90  # the model's embedding of the second batch keeps its cell types apart
    assert (tmp_path / "model.npz").exists()


def test_api_reference_builds_without_warnings(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            str(DOCS),
            str(tmp_path / "html"),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    page = (tmp_path / "html" / "api.html").read_text()
    for name in (
        "rlae_sc.pp.recipe",
        "rlae_sc.tl.rlae",
        "rlae_sc.tl.embed",
        "rlae_sc.get.model",
        "rlae_sc.pl.shrinkage",
    ):
        assert f'id="{name}"' in page, name


def readme_blocks() -> list[str]:
    """The README's ```python blocks, in order."""
    return re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), flags=re.M | re.S)


def test_the_readme_has_python_blocks():
    assert readme_blocks()


@pytest.mark.parametrize("block", range(len(readme_blocks())))
def test_readme_python_block_runs(block, tmp_path):
    code = readme_blocks()[block]
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, f"README python block {block + 1} failed:\n{code}\n{out.stderr[-4000:]}"
