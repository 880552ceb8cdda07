"""The documentation runs and tells the truth about the records.

- The Sphinx site builds with warnings as errors (once per test session, shared by the tests below): its pages, the
  API reference, and the tutorial notebook, which the build executes (``docs/_ext/notebook.py``).
- Every Python block of the README runs.
- Every number the README quotes from a benchmark record equals the record. The convention, for README.md:

  * a measured number is written as ``VALUE [UNIT] (`FILE.json: PATH`)``, for example
    ``0.624 (`integration.json: tasks.pbmc3.methods.rlae_harmony.total`)`` or
    ``1.43 GB (`streaming.json: runs[n_cells=1000000,mode=streaming].stages.*.peak_rss_gb.@max`)``;
    ``FILE.json`` is a record in ``benchmarks/``, ``PATH`` a path into it in the syntax of the documentation's
    ``:record:`` role (``docs/_ext/records.py``: dotted keys, ``[key=value]`` filters, ``*`` and ``@max``...);
  * ``VALUE`` is a plain number (``0.624``, ``15,211``, ``2.7e-13``), or ``1 - D`` for a value close to 1 (``1 -
    1.2e-12``); it must equal the record's value rounded to the digits shown;
  * outside code (fenced blocks and inline code) and those references, the README's prose holds no other decimal
    number, so a measured number cannot be quoted without its record. Integers (sizes, years, counts of things)
    are not checked.

  The pages of the Sphinx site quote records only through the ``:record:`` role and the ``record-table`` directive,
  which read the value at build time; ``docs/benchmarks.rst`` is also checked for bare decimals, as the README is.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from .conftest import ROOT

DOCS = ROOT / "docs"


def _records_module():
    spec = importlib.util.spec_from_file_location("rlae_docs_records", DOCS / "_ext" / "records.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


records = _records_module()


@pytest.fixture(scope="module")
def built_docs(tmp_path_factory):
    """The site built once with ``-W`` (the tutorial executed into ``notebook/``): the build's output folder."""
    root = tmp_path_factory.mktemp("docs")
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
            str(root / "doctrees"),
            "-D",
            f"notebook_execution_dir={root / 'notebook'}",
            str(DOCS),
            str(root / "html"),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return root


def test_tutorial_notebook_executes(built_docs):
    """The build ran the notebook from the top in a fresh kernel (a failing cell fails the build, with -W)."""
    tmp_path = built_docs / "notebook"
    notebook = nbformat.read(tmp_path / "tutorial.executed.ipynb", as_version=4)
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    imports = "".join(out.get("text", "") for out in notebook.cells[1].outputs if out.get("name") == "stderr")
    assert "tqdm" not in imports and "rlae_sc" not in imports  # importing rlae_sc in a notebook is silent
    text = "".join(out.get("text", "") for out in outputs)
    accuracy = float(re.search(r"second batch: ([\d.]+)% correct", text).group(1))
    assert accuracy > 90  # the model's embedding of the second batch keeps its cell types apart
    assert (tmp_path / "model.npz").exists()


def test_api_reference_builds_without_warnings(built_docs):
    page = (built_docs / "html" / "api.html").read_text()
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


def test_every_page_is_built(built_docs):
    html = built_docs / "html"
    for page in ["index", "tutorial", "theory", "benchmarks", "api", "guide/index", "guide/stages", "guide/scale"]:
        assert (html / f"{page}.html").exists(), page
    tutorial = (html / "tutorial.html").read_text()
    assert "second batch:" in tutorial and "data:image/png;base64," in tutorial  # outputs of the executed notebook
    benchmarks = (html / "benchmarks.html").read_text()
    assert "Record: benchmarks/integration.json" in benchmarks  # tables state their record


# --- numbers quoted from the records ------------------------------------------------------------------------------

REFERENCE = re.compile(
    r"(?P<value>1 - \d+(?:\.\d+)?(?:e-?\d+)?|\d[\d,]*(?:\.\d+)?(?:e-?\d+)?)"
    r"(?:\s+(?:GiB|GB|s|min|%))?\s+\(`(?P<file>[\w.-]+\.json):\s*(?P<path>[^`]+)`\)"
)
DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+|(?<![\w.])\d+(?:\.\d+)?e-?\d+")


def prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def quoted_numbers(text: str) -> list[tuple[str, str, str]]:
    """The ``(value, file, path)`` of every number quoted with a record reference in Markdown ``text``."""
    return [(m["value"], m["file"], m["path"].strip()) for m in REFERENCE.finditer(text)]


def equals_printed(printed: str, value: float) -> bool:
    """Whether ``value`` rounds to ``printed`` (``0.624``, ``15,211``, ``2.7e-13``, ``1 - 1.2e-12``)."""
    if printed.startswith("1 - "):
        return equals_printed(printed[4:], 1.0 - value)
    text = printed.replace(",", "")
    mantissa, _, exponent = text.partition("e")
    decimals = len(mantissa.partition(".")[2])
    unit = 10.0 ** (int(exponent or 0) - decimals)
    return math.isclose(float(text), value, abs_tol=0.5 * unit * (1 + 1e-9))


def test_equals_printed_rounds_as_shown():
    assert equals_printed("0.624", 0.6237016)
    assert not equals_printed("0.623", 0.6237016)
    assert equals_printed("1 - 1.2e-12", 0.9999999999987912)
    assert not equals_printed("1 - 1.3e-12", 0.9999999999987912)
    assert equals_printed("15,211", 15211)
    assert equals_printed("1.43", 1.4279632568359375)


def test_the_convention_finds_references():
    line = "is 0.624 (`integration.json: tasks.pbmc3.methods.rlae_harmony.total`), and 1.43 GB (`x.json: a.b`)"
    assert quoted_numbers(line) == [
        ("0.624", "integration.json", "tasks.pbmc3.methods.rlae_harmony.total"),
        ("1.43", "x.json", "a.b"),
    ]
    assert DECIMAL.findall(prose(REFERENCE.sub("", line))) == []
    assert DECIMAL.findall(prose("took 0.59x as long")) == ["0.59"]


def test_readme_numbers_equal_their_records():
    text = (ROOT / "README.md").read_text()
    quoted = quoted_numbers(text)
    assert len(quoted) >= 3, "the README quotes measured numbers with their records"
    wrong = []
    for printed, file, path in quoted:
        value = records.resolve(records.load(file), path)
        if not equals_printed(printed, float(value)):
            wrong.append(f"{printed} != {value!r} ({file}: {path})")
    assert not wrong, "README numbers that differ from their records:\n" + "\n".join(wrong)


@pytest.mark.parametrize("page", ["README.md", "docs/benchmarks.rst"])
def test_no_decimal_without_its_record(page):
    """Outside code and record references, no decimal number: a measured number always names its record."""
    text = (ROOT / page).read_text()
    if page.endswith(".rst"):
        text = re.sub(r":record:`[^`]*`", "", text)
        text = re.sub(r"^\.\. record-(?:table|source)::.*?(?=^\S|\Z)", "", text, flags=re.M | re.S)
        text = re.sub(r":math:`[^`]*`", "", text)
        text = text.replace("``", "`")
    text = prose(REFERENCE.sub("", text))
    bare = [(line.strip(), DECIMAL.findall(line)) for line in text.splitlines() if DECIMAL.search(line)]
    assert not bare, f"{page}: decimal numbers without a record reference: {bare}"


def test_record_paths_of_the_docs_resolve():
    """Every ``:record:`` of the pages names a record and a path that exist (the build checks the same, with -W)."""
    for page in sorted(DOCS.rglob("*.rst")):
        for ref in re.findall(r":record:`([^`]*)`", page.read_text()):
            file, path, spec = records.parse_reference(ref)
            records.format_value(records.resolve(records.load(file), path), spec)


def test_records_are_json():
    for record in sorted((ROOT / "benchmarks").glob("*.json")):
        json.loads(record.read_text())
    assert isinstance(records.load("integration"), dict)
    assert Path(records.RECORDS) == ROOT / "benchmarks"
