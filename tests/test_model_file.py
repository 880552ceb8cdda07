"""The portable model file: exact round trip, checksum, and no unpickling."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rlae_sc import fit, load_model, preprocess
from rlae_sc.errors import InputError


@pytest.fixture(scope="module")
def trained(small_counts):
    pre, _ = preprocess(small_counts, min_genes=50, n_top_genes=150)
    return pre, fit(pre, n_components=8)


def test_round_trip_is_exact(trained, tmp_path):
    pre, model = trained
    path = tmp_path / "model.npz"
    model.save(path)
    again = load_model(path)
    np.testing.assert_array_equal(again.decoder, model.decoder)
    np.testing.assert_array_equal(again.directions, model.directions)
    assert again.recipe.genes == model.recipe.genes
    assert again.lam == model.lam
    np.testing.assert_array_equal(again.scores(pre.X), model.scores(pre.X))


def test_manifest_records_versions_and_parameters(trained, tmp_path):
    _, model = trained
    path = tmp_path / "model.npz"
    model.save(path)
    with np.load(path, allow_pickle=False) as z:
        manifest = json.loads(z["__manifest__"].tobytes())
    assert {"rlae-sc", "torch", "scanpy"} <= set(manifest["versions"])
    assert manifest["n_components"] == 8 and manifest["lambda"] == model.lam
    assert manifest["recipe"]["genes"] == model.recipe.genes


def test_tampered_file_is_refused(trained, tmp_path):
    _, model = trained
    path = tmp_path / "model.npz"
    model.save(path)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["decoder"] = arrays["decoder"] * 1.001
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    with pytest.raises(InputError, match="checksum mismatch"):
        load_model(path)


def test_pickled_content_is_never_loaded(tmp_path):
    path = tmp_path / "evil.npz"
    with open(path, "wb") as fh:
        np.savez(fh, __manifest__=np.array([{"x": 1}], dtype=object), __checksum__=np.zeros(3))
    with pytest.raises(InputError, match="not a readable model file"):
        load_model(path)


def test_garbage_file_is_refused(tmp_path):
    path = tmp_path / "garbage.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a readable model file"):
        load_model(path)
