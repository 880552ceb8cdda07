"""The coordinator's side of a federated fit, without transport: what to ask in each round, and the decisions
taken from the summed answers.

A :class:`Plan` holds the recipe fitted so far. :meth:`Plan.request` is what
every site is sent; :meth:`Plan.advance` takes the sums over sites of their
answers (:func:`rlae_sc.federated.statistics.site_statistics`), applies the
same decision functions as the pooled :func:`rlae_sc.preprocess.fit_recipe`
(:mod:`rlae_sc.decisions`: :func:`~rlae_sc.decisions.check_qc`, :func:`~rlae_sc.decisions.gene_candidates`,
:func:`~rlae_sc.decisions.set_scale`; :func:`~rlae_sc.hvg.seurat_v3_clip`, :func:`~rlae_sc.hvg.seurat_v3_select`)
and moves to the next round; after the last one, :meth:`Plan.train` fits the model on the summed ``C`` with
:func:`rlae_sc.train.fit_scatter`, the solver and checks of ``train``.

``target_sum`` (a median of cell totals, not a sum) is found exactly from two
histograms of the integer totals of QC-passing cells, both sums over sites: a
coarse one (bins of 1,024 counts) locates the median's bin(s), a fine one (one
bin per count) within them gives the median itself, equal to the pooled
``numpy.median`` for integer counts. A ``target_sum`` given in the parameters
skips both.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rlae_sc.atomic import atomic_path
from rlae_sc.decisions import check_qc, gene_candidates, new_recipe, set_genes, set_scale, set_stats
from rlae_sc.errors import InputError
from rlae_sc.federated import FederationError
from rlae_sc.federated.statistics import COARSE_BINS, COARSE_WIDTH, fraction_bits
from rlae_sc.hvg import seurat_v3_clip, seurat_v3_select
from rlae_sc.params import PreprocessParams, TrainParams
from rlae_sc.recipe import Recipe

PLAN_FORMAT = "rlae-sc-federation-plan"


@dataclass
class Plan:
    """State of the coordinator between rounds (JSON-ready).

    Attributes
    ----------
    params
        Preprocessing parameters (fields of :class:`rlae_sc.params.PreprocessParams`).
    train
        Training parameters (fields of :class:`rlae_sc.params.TrainParams`).
    run
        Random id of this run; site answers of another run are refused.
    round
        The round whose answers are awaited: ``qc``, ``hvg``, ``scale``,
        ``offset``, ``scatter``, then ``done``.
    recipe
        The recipe fitted so far (``None`` before the first answers).
    state
        Summed statistics the later decisions need (lists).
    sites
        Names of the sites taking part, fixed in the first round.
    """

    params: dict
    train: dict = field(default_factory=dict)
    run: str = field(default_factory=lambda: secrets.token_hex(8))
    round: str = "qc"
    index: int = 0
    recipe: dict | None = None
    state: dict = field(default_factory=dict)
    sites: list[str] = field(default_factory=list)

    def request(self) -> dict:
        """What every site is sent for the current round (JSON-ready)."""
        req = {"run": self.run, "round": self.round, "index": self.index, "params": self.params, "recipe": self.recipe}
        if self.round == "hvg":
            req["fine"] = self.state.get("fine")
            fit = self.state.get("hvg_fit")
            req["cand"], req["clip_val"] = (fit["cand"], fit["clip_val"]) if fit else (None, None)
        if self.round == "scatter":
            req["precision"] = self.train.get("scatter_precision", "float32")
        return req

    def spec(self, n_genes: int) -> list:
        """``[name, length, fraction bits]`` of every array the sites return this round (input genes: ``n_genes``).

        Bits come from public bounds: integer statistics are exact (0 bits);
        clipped counts are bounded by the summed counts, log-normalised values
        by ``log1p(target_sum)``, clipped scaled values by ``clip``, and
        every entry of ``Z^T Z`` and every column sum of ``Z`` by ``4 n``
        (Cauchy-Schwarz: a gene's scaled values square-sum to ``n - 1`` over all cells).
        """
        if self.round == "qc":
            genes = [[key, n_genes, 0] for key in ("n_cells_all", "n_cells", "sum", "sumsq")]
            return [["counts", 3, 0], *genes, ["totals_coarse", COARSE_BINS, 0]]
        n = self.state["n"]
        m = len(self.recipe["genes"]) if self.recipe and self.recipe["genes"] else 0
        if self.round == "hvg":
            out = [["totals_fine", self.state["fine"][1], 0]] if self.state.get("fine") else []
            fit = self.state.get("hvg_fit")
            if fit:
                out += [
                    ["clipped_sum", len(fit["cand"]), fraction_bits(self.state["max_count_sum"])],
                    ["clipped_sumsq", len(fit["cand"]), fraction_bits(self.state["max_count_sumsq"])],
                ]
            return out
        if self.round == "scale":
            top = np.log1p(self.recipe["target_sum"])
            return [["sum", m, fraction_bits(n * top)], ["sumsq", m, fraction_bits(n * top**2)]]
        if self.round == "offset":
            return [["sum", m, fraction_bits(n * self.params["clip"])]]
        if self.round == "scatter":
            bits = fraction_bits(4 * n)
            return [["C", m * (m + 1) // 2, bits], ["colsum", m, bits], ["n", 1, 0]]
        raise FederationError(f"no round after {self.round!r}")

    def advance(self, total: dict[str, np.ndarray], *, genes: list[str] | None = None) -> np.ndarray | None:
        """Take the sums over sites of this round's answers and move on; returns ``C`` (m x m, centred) after
        the last round, else ``None``. ``genes``: the sites' input genes (first round only)."""
        name = self.round
        if name == "qc":
            self._after_qc(total, genes)
        elif name == "hvg":
            self._after_hvg(total)
        elif name == "scale":
            recipe = Recipe.from_dict(self.recipe)
            set_scale(recipe, total, self.state["n"])
            self.recipe = recipe.to_dict()
            self.round = "offset" if self.params.get("clip") is not None else "scatter"
        elif name == "offset":
            self.recipe["offset"] = (total["sum"] / self.state["n"]).tolist()
            self.round = "scatter"
        elif name == "scatter":
            self.round = "done"
            return _centred_scatter(total, len(self.recipe["genes"]))
        else:
            raise FederationError(f"the plan is complete (round {name!r}); start a new run")
        self.index += 1
        return None

    def _after_qc(self, total: dict, genes: list[str]) -> None:
        recipe, _ = new_recipe(genes, source="federation", **self.params)
        n_in, n_zero, n = (int(v) for v in total["counts"])
        check_qc(recipe, n_in, n, None, source="federation")
        candidates = gene_candidates(recipe, total["n_cells"], source="federation")
        self.state.update(
            n=n,
            counts={"n_cells_in": n_in, "n_cells_all_zero": n_zero, "n_cells_kept": n},
            n_cells_all=total["n_cells_all"].tolist(),
            n_cells=total["n_cells"].tolist(),
            candidates=candidates.tolist(),
        )
        if recipe.target_sum is None:
            self.state["coarse"] = total["totals_coarse"].tolist()
            self.state["fine"] = _median_window(total["totals_coarse"], n)
        if candidates.sum() > recipe.n_top_genes:
            fit = seurat_v3_clip(total, candidates, n)
            self.state["hvg_fit"] = {key: np.asarray(val).tolist() for key, val in fit.items()}
            self.state["max_count_sum"] = float(total["sum"][fit["cand"]].max())
            self.state["max_count_sumsq"] = float(total["sumsq"][fit["cand"]].max())
        self.recipe = recipe.to_dict()
        self.round = "hvg" if ("fine" in self.state or "hvg_fit" in self.state) else "scale"
        if self.round == "scale":
            self._set_genes(recipe, candidates)

    def _after_hvg(self, total: dict) -> None:
        recipe = Recipe.from_dict(self.recipe)
        if "fine" in self.state:
            recipe.target_sum = _median_from(self.state["coarse"], self.state["fine"], total["totals_fine"])
        candidates = np.asarray(self.state["candidates"], dtype=bool)
        if "hvg_fit" in self.state:
            fit = {key: np.asarray(val) for key, val in self.state["hvg_fit"].items()}
            clipped = {"sum": total["clipped_sum"], "sumsq": total["clipped_sumsq"]}
            hvg = seurat_v3_select([fit], [clipped], [self.state["n"]], len(candidates), recipe.n_top_genes)
        else:
            hvg = candidates
        self._set_genes(recipe, hvg)
        self.round = "scale"

    def _set_genes(self, recipe: Recipe, hvg: np.ndarray) -> None:
        set_genes(recipe, hvg)
        gene = {key: np.asarray(self.state[key]) for key in ("n_cells_all", "n_cells")}
        set_stats(recipe, self.state["counts"], gene, np.asarray(self.state["candidates"], dtype=bool))
        self.recipe = recipe.to_dict()

    def train_model(self, C: np.ndarray, *, scatter_seconds: float = 0.0):
        """Fit the model on the summed, centred ``C`` (m x m) with :func:`rlae_sc.train.fit_scatter` (which checks
        that ``n_components`` fits the cells and genes)."""
        from rlae_sc.train import fit_scatter  # torch, here only: the rounds before need numpy alone

        return fit_scatter(
            C,
            n_cells=self.state["n"],
            recipe=Recipe.from_dict(self.recipe),
            params=TrainParams.of(self.train, source="federation"),
            scatter_seconds=scatter_seconds,
            source="federation",
        )

    def save(self, path: str | Path) -> None:
        """Write the plan as JSON (atomically)."""
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps({"format": PLAN_FORMAT, **asdict(self)}))

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        """Read a plan written by :meth:`save`."""
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise InputError(
                path, f"cannot be read as a federation plan ({exc})", "Run `rlae-sc combine` again."
            ) from None
        if d.pop("format", None) != PLAN_FORMAT:
            raise InputError(path, "is not a federation plan", "Give the plan.json written by `rlae-sc combine`.")
        return cls(**d)


def new_plan(params: dict, train: dict) -> Plan:
    """A plan for counts input with seurat_v3 selection: ``params`` and ``train`` hold fields of
    :class:`rlae_sc.params.PreprocessParams` and :class:`rlae_sc.params.TrainParams` (checked)."""
    steps = PreprocessParams.of(params, source="federation")
    if steps.hvg_flavor != PreprocessParams.hvg_flavor:
        raise InputError(
            "federation",
            f"hvg_flavor {params['hvg_flavor']!r} is not supported in a federated fit",
            f"Leave hvg_flavor unset ({PreprocessParams.hvg_flavor}, on counts).",
        )
    if steps.qc != PreprocessParams.qc:
        raise InputError(
            "federation",
            f"qc {steps.qc} needs every cell's QC metrics in one place, which a federation does not have",
            f"Leave qc unset ({PreprocessParams.qc}) for the federation.",
        )
    if steps.batch_key is not None:
        raise InputError(
            "federation",
            "batch_key is not available in a federated fit yet",
            "Leave batch_key unset for the federation (each site's cells are centred on the pooled mean).",
        )
    if steps.normalization != PreprocessParams.normalization:
        raise InputError(
            "federation",
            f"normalization {steps.normalization!r} is not supported in a federated fit",
            f"Leave normalization unset ({PreprocessParams.normalization}).",
        )
    if TrainParams.of(train, source="federation").batch_size:
        raise InputError("federation", "mini-batch training needs the cells, not their sums", "Unset batch_size.")
    return Plan(params=dict(params), train=dict(train))


def _centred_scatter(total: dict, m: int) -> np.ndarray:
    """``C = sum Z^T Z - n mu mu^T`` (m x m) from the summed upper triangle, column sums and cell count."""
    C = np.zeros((m, m))
    iu = np.triu_indices(m)
    C[iu] = total["C"]
    C = C + np.triu(C, 1).T
    n = float(total["n"][0])
    mu = total["colsum"] / n
    C -= n * np.outer(mu, mu)
    return C


def _ranks(n: int) -> tuple[int, int]:
    """0-based ranks of the two middle values of ``n`` sorted values (equal for odd ``n``)."""
    return (n - 1) // 2, n // 2


def _median_window(coarse: np.ndarray, n: int) -> list[int]:
    """``[lo, width]``: the totals (integers) spanned by the coarse bins holding the two middle ranks."""
    cum = np.cumsum(coarse)
    lo_bin, hi_bin = (int(np.searchsorted(cum, r, side="right")) for r in _ranks(n))
    if hi_bin >= COARSE_BINS - 1:
        raise FederationError(
            f"the median total count of a cell is above {COARSE_WIDTH * (COARSE_BINS - 1):,}; "
            "give target_sum explicitly for this federation"
        )
    return [lo_bin * COARSE_WIDTH, (hi_bin - lo_bin + 1) * COARSE_WIDTH]


def _median_from(coarse: list, fine_window: list, fine: np.ndarray) -> float:
    """The median of the cells' integer totals from the coarse and the fine histogram (see the module)."""
    coarse = np.asarray(coarse, dtype=np.int64)
    n = int(coarse.sum())
    lo, _ = fine_window
    below = int(coarse[: lo // COARSE_WIDTH].sum())
    cum = np.cumsum(np.rint(fine).astype(np.int64))
    if len(cum) == 0 or cum[-1] + below < _ranks(n)[1] + 1:
        raise FederationError("the sites' histograms of cell totals disagree between rounds; a site's data changed")
    v1, v2 = (lo + int(np.searchsorted(cum, r - below, side="right")) for r in _ranks(n))
    return (v1 + v2) / 2
