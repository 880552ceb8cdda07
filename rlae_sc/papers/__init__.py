"""The papers' figures, reproduced: Kunin et al. (ICML 2019) figures 3-8 (:mod:`.kunin2019`), Bao et al.'s
(NeurIPS 2020) comparisons of learning rules (:mod:`.bao2020`), the exact learning dynamics of Saxe, McClelland and
Ganguli on the sum loss (:mod:`.dynamics`) and learning without weight transport (Kunin et al. 2020,
:mod:`.transport`), on the papers' synthetic data and on single cells (:mod:`.data`); :func:`make_figures`
(:mod:`.page`) writes them all to one page (``rlae-sc figures``).

Each figure function returns ``(figure, caption, numbers)``: the caption states the theory's prediction and
the numbers this run measured. Figures are drawn off-screen (:class:`matplotlib.figure.Figure`, no pyplot).
"""

from rlae_sc.papers.page import FIGURE_NAMES, make_figures

__all__ = ["FIGURE_NAMES", "make_figures"]
