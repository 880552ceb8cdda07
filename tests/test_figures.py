"""`rlae-sc figures` (quick mode): every figure is written, and its numbers say what the theory says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlae_sc.papers import FIGURE_NAMES
from tests.conftest import rlae_cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def figures_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    rlae_cli("figures", "--out-dir", str(out), "--quick", threads=1)  # thousands of small steps: one thread is faster
    return out


def test_every_figure_is_written_with_its_caption(figures_dir):
    html = (figures_dir / "figures.html").read_text()
    for name in FIGURE_NAMES:
        assert (figures_dir / "figures" / f"{name}.png").stat().st_size > 0
        assert f'id="{name}"' in html
    assert "Measured" in html


def test_numbers_follow_the_theory(figures_dir):
    n = json.loads((figures_dir / "figures.json").read_text())
    assert n["fig3_transpose_distance_sum"] <= 1e-6
    assert n["fig3_transpose_distance_product"] > 1e-2 and n["fig3_transpose_distance_unregularized"] > 1e-2
    assert n["fig4_min_diagonal_sum"] > 0.999 and n["fig4_min_diagonal_product"] > 0.999
    assert n["fig4_min_diagonal_unregularized"] < 0.9
    assert n["fig5_max_error_sum"] <= 1e-3
    assert n["fig6_axis_ratio_sum_decoder"] > n["fig6_axis_ratio_unregularized_decoder"]
    assert n["fig7_min_abs_cos_top9"] > 0.999 and n["fig8_score_correlation_min"] > 0.999


def test_dynamics_figure_numbers(figures_dir):
    """The dynamics runs are not shortened by --quick: these are the published figure's claims."""
    n = json.loads((figures_dir / "figures.json").read_text())
    assert n["saxe_synthetic_max_dev_steps"] <= 0.02 and n["saxe_cells_max_dev_steps"] <= 0.02
    assert n["saxe_small_step_max_dev_flow"] <= 0.02  # the sigmoid itself, at 1/100 of the figures' step
    assert n["saxe_synthetic_max_dev_flow"] > 0.1  # ... and not at the figures' step
    for run in ("synthetic", "small_step", "cells"):
        assert n[f"saxe_{run}_ordered"] == 1.0
        halves = [n[f"saxe_{run}_half_iteration_{i}"] for i in range(1, 11)]
        assert all(a < b for a, b in zip(halves, halves[1:]))


def test_weight_transport_figure_numbers(figures_dir):
    n = json.loads((figures_dir / "figures.json").read_text())
    for data in ("synthetic", "cells"):
        assert n[f"transport_{data}_feedback_alignment_no_decay_feedback_distance"] >= 0.5
        kp = n[f"transport_{data}_kolen_pollack_decay_feedback_distance"]
        assert kp < n[f"transport_{data}_kolen_pollack_no_decay_feedback_distance"] / 2  # --quick: 100 steps
    html = (figures_dir / "figures.html").read_text()
    assert "Kolen-Pollack with decay" in html and "worst deviation" in html


def test_snakemake_figures_rule_lists_the_files_drawn(figures_dir):
    """The rule's outputs are FIGURE_NAMES (imported by figures.smk, named nowhere else), and those are exactly
    the figures `rlae-sc figures` draws."""
    text = (ROOT / "workflow" / "rules" / "figures.smk").read_text()
    assert "from rlae_sc.papers import FIGURE_NAMES" in text and "for name in FIGURE_NAMES" in text
    assert {path.stem for path in (figures_dir / "figures").glob("*.png")} == set(FIGURE_NAMES)
