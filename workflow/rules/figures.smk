# The papers' figures (not part of `all`): `snakemake --cores 2 figures`.
FIGURE_NAMES = [
    "kunin_fig3_transpose_distance",
    "kunin_fig4_heatmaps",
    "kunin_fig5_shrinkage",
    "kunin_fig6_unit_circle",
    "kunin_fig7_directions",
    "kunin_fig8_embeddings",
    "bao_rules_synthetic",
    "bao_rules_cells",
    "bao_iterations_vs_k",
    "saxe_mode_strengths",
    "weight_transport",
]


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
