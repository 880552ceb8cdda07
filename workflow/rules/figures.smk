# The papers' figures (not part of `all`): `snakemake --cores 2 figures`.
from rlae_sc.papers import FIGURE_NAMES  # noqa: E402  the figures make_figures draws, named once


rule figures:
    output:
        html="results/figures/figures.html",
        numbers="results/figures/figures.json",
        figures=[
            report(f"results/figures/figures/{name}.png", caption="../report/papers.rst", category="papers")
            for name in FIGURE_NAMES
        ],
    log:
        "logs/figures.log",
    params:
        rlae=RLAE,
    threads: 2
    resources:
        mem_mb=4000,
    conda:
        "../envs/rlae-sc.yaml"
    shell:
        "{params.rlae} figures --out-dir results/figures > {log} 2>&1"
