"""Where the tied exact solver's time goes on a GPU (one-off profile; prints tables)."""

from __future__ import annotations

import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
package = types.ModuleType("rlae_sc")
package.__path__ = [str(ROOT / "rlae_sc")]
sys.modules["rlae_sc"] = package
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu as G  # noqa: E402

from rlae_sc.lae import solvers as S  # noqa: E402


def t(fn, dev, reps=5):
    ts = []
    for _ in range(reps):
        torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize(dev)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)), out


dev = torch.device("cuda")
X = G.make_matrix(100_000)
C_np = G.scatter_matrix(X, precision="float32", device=dev)
C = torch.from_numpy(C_np).to(dev)
S.fit_tied_exact(C, 50)
torch.linalg.eigh(C)
print("solver", t(lambda: S.fit_tied_exact(C, 50), dev)[0], "eigh", t(lambda: torch.linalg.eigh(C), dev)[0])
print("eigh float32", t(lambda: torch.linalg.eigh(C.float()), dev)[0])
W = torch.linalg.qr(torch.randn(2000, 60, dtype=torch.float64))[0].to(dev)
print("step f64 x20", t(lambda: [S.tied_step(C, W, 0.0) for _ in range(20)], dev)[0])
Cf, Wf = C.float(), W.float()
print("step f32 x20", t(lambda: [S.tied_step(Cf, Wf, 1.0) for _ in range(20)], dev)[0])
print("matmul f64 x20", t(lambda: [C @ W for _ in range(20)], dev)[0])
print("matmul f32 x20", t(lambda: [Cf @ Wf for _ in range(20)], dev)[0])
Gm = W.T @ (C @ W)
print("cholesky_ex 60 f64 x20", t(lambda: [torch.linalg.cholesky_ex(Gm)[0] for _ in range(20)], dev)[0])
print("ritz x1", t(lambda: S.ritz(W, Gm), dev)[0])
print("qr 2000x60 f64", t(lambda: torch.linalg.qr(W), dev)[0])
print("ridge_decoder", t(lambda: S.ridge_decoder(C, W.T.contiguous(), 1.0), dev)[0])
fit = S.fit_tied_exact(C, 50)
print("n_iter", fit.n_iter, "diag", fit.diagnostics)
from torch.profiler import ProfilerActivity, profile  # noqa: E402

with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    S.fit_tied_exact(C, 50)
    torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=30))
