"""Session settings (rlae_sc/settings.py, ``rl.settings``): each takes effect where the code reads it, and
``override`` restores it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info

import rlae_sc
import rlae_sc.settings
from rlae_sc import progress as progress_module
from rlae_sc.engine import run_pass
from rlae_sc.noise_floor import parallel_analysis
from rlae_sc.products import scatter_matrix, torch_device
from rlae_sc.progress import in_notebook, progress
from rlae_sc.rows import InMemory, Rows
from rlae_sc.settings import Settings, settings


@dataclass(frozen=True)
class CountedRows(Rows):
    """Rows of ``array`` that record each block read, ``(start, stop)``."""

    array: np.ndarray
    reads: list = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int]:
        return self.array.shape

    def read(self, start: int, stop: int) -> np.ndarray:
        self.reads.append((start, stop))
        return self.array[start:stop]

    def fingerprint(self) -> str:
        return "counted"


def blocks(block, start: int) -> tuple[dict, dict]:
    return {"blocks": 1}, {"first": np.array([start] * block.shape[0])}


@pytest.fixture
def X():
    return np.random.default_rng(0).standard_normal((1000, 20)).astype(np.float32)


def test_rl_settings_is_the_one_settings_object():
    assert rlae_sc.settings is settings and isinstance(settings, Settings)  # not the submodule of that name
    assert "settings" in rlae_sc.__all__
    assert repr(settings).startswith("Settings(progress=")


def test_block_size_is_the_passes_default(X):
    """A pass given no ``chunk_size`` takes ``block_size``: the engine, the scatter pass and the noise floor's
    permutation blocks; a pass given one keeps it."""
    assert run_pass(InMemory(X), blocks)[0]["blocks"] == 1  # 1,000 rows: one block by default
    with settings.override(block_size=300):
        sums, rows = run_pass(InMemory(X), blocks)
        assert sums["blocks"] == 4 and list(np.unique(rows["first"])) == [0, 300, 600, 900]
        assert run_pass(InMemory(X), blocks, chunk_size=500)[0]["blocks"] == 2
        counted = CountedRows(X)
        scatter_matrix(counted, device="cpu")
        assert counted.reads == [(0, 300), (300, 600), (600, 900), (900, 1000)]
        floor = parallel_analysis(X, sum_squares=np.sum(X.astype(np.float64) ** 2, axis=0), n_permutations=1)
        assert floor.chunk_size == 300 and "within blocks of 300 cells" in floor.rule
    assert settings.block_size == Settings().block_size
    with pytest.raises(ValueError, match="block_size"):
        settings.block_size = 0


def test_block_size_changes_only_the_rounding_of_the_scatter(X):
    with settings.override(block_size=128):
        C = scatter_matrix(CountedRows(X), precision="float64", device="cpu")
    np.testing.assert_allclose(C, scatter_matrix(CountedRows(X), precision="float64", device="cpu"), rtol=1e-12)


def test_threads_set_torch_and_the_blas_libraries_and_are_restored():
    before_torch = torch.get_num_threads()
    before = {lib["filepath"]: lib["num_threads"] for lib in threadpool_info()}
    with settings.override(threads=1):
        assert settings.threads == 1
        assert torch.get_num_threads() == 1
        assert {lib["num_threads"] for lib in threadpool_info()} == {1}
    assert settings.threads is None
    assert torch.get_num_threads() == before_torch
    after = {lib["filepath"]: lib["num_threads"] for lib in threadpool_info()}
    assert {path: after[path] for path in before} == before
    with pytest.raises(ValueError, match="threads"):
        settings.threads = 0


def test_verbosity_is_the_level_of_the_package_logger():
    log = logging.getLogger("rlae_sc")
    level = log.level
    with settings.override(verbosity="debug"):
        assert log.level == logging.DEBUG == settings.verbosity
        with settings.override(verbosity=logging.WARNING):
            assert log.level == logging.WARNING
        assert log.level == logging.DEBUG
    assert log.level == level


def test_device_auto_stands_for_the_settings_device():
    assert settings.device == "auto"
    assert torch_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with settings.override(device="meta"):
        assert torch_device("auto") == torch.device("meta")
        assert torch_device("cpu") == torch.device("cpu")  # a device named in the call is kept
    assert torch_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_progress_turns_the_bars_on_and_off(monkeypatch):
    with settings.override(progress=True), progress(total=10, desc="on") as bar:
        assert not bar.disable
    with settings.override(progress=False), progress(total=10, desc="off") as bar:
        assert bar.disable
    assert settings.progress is None and not in_notebook()  # pytest's stderr is no terminal, nor a notebook
    with progress(total=10, desc="auto") as bar:
        assert bar.disable
    monkeypatch.setattr(progress_module, "in_notebook", lambda: True)  # a Jupyter kernel with ipywidgets
    with progress(total=10, desc="notebook") as bar:
        assert not bar.disable
    with pytest.raises(ValueError, match="progress"):
        settings.progress = "yes"


def test_override_restores_after_an_error_and_refuses_unknown_names():
    with pytest.raises(RuntimeError), settings.override(block_size=7, progress=False):
        raise RuntimeError("inside")
    assert settings.block_size == Settings().block_size and settings.progress is None
    with pytest.raises(AttributeError, match="no setting"), settings.override(blocksize=7):
        pass
    with pytest.raises(AttributeError):
        settings.blocksize = 7  # a misspelt setting is not silently added
    assert rlae_sc.settings is settings
