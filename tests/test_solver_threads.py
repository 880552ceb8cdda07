"""The default solver gives the same bytes with one thread and with two (issue 27).

At kang's shape (1,287 genes, 50 + 40 trained units) LAPACK's triangular solves and small eigensolvers split their
sums by thread count; the solver runs them on one thread (:func:`rlae_sc.lae.solvers.one_thread`). Each fit runs in
a fresh process whose OpenMP, MKL, OpenBLAS and numba thread counts are set before numpy and torch load.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from tests.conftest import thread_vars

FIT = """
import sys, numpy as np, torch
from rlae_sc.lae.solvers import fit_tied_exact
fit = fit_tied_exact(torch.from_numpy(np.load(sys.argv[1])), 50)
np.save(sys.argv[2], np.concatenate([fit.encoder.ravel(), fit.decoder.ravel(), [fit.lam]]))
"""


def test_tied_solver_same_bytes_with_one_and_two_threads(tmp_path):
    rng = np.random.default_rng(0)
    m = 1287
    # a spectrum like log-normalised cells': a few strong directions over a slowly decaying tail
    scales = np.concatenate([np.linspace(30, 8, 10), 3.0 * np.exp(-np.arange(m - 10) / 400)])
    A = rng.standard_normal((3000, m)) * scales
    C = A.T @ A
    np.save(tmp_path / "C.npy", C)
    results = []
    for threads in (2, 1):
        env = os.environ | thread_vars(threads)
        out = tmp_path / f"fit{threads}.npy"
        subprocess.run([sys.executable, "-c", FIT, str(tmp_path / "C.npy"), str(out)], env=env, check=True)
        results.append(np.load(out))
    assert results[0].tobytes() == results[1].tobytes()
