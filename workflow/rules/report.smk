rule report:
    input:
        EMBEDDING,
    output:
        html="results/{dataset}/report.html",
        figures=[
            report(
                f"results/{{dataset}}/figures/{name}.png",
                caption=f"../report/{name}.rst",
                category="{dataset}",
            )
            for name in FIGURES
        ],
    log:
        "logs/{dataset}/report.log",
    benchmark:
        "logs/{dataset}/report.benchmark.tsv"  # wall time and peak memory of the stage (Snakemake's benchmark)
    params:
        rlae=RLAE,
        label=label_flag,
    threads: 1
    resources:
        mem_mb=mem_mb_for(2000, 2),
        runtime=runtime_for(10, 5),
    conda:
        "../envs/rlae-sc.yaml"
    shell:
        "{params.rlae} report {input} --out-dir results/{wildcards.dataset} --dataset {wildcards.dataset} "
        "{params.label} > {log} 2>&1"
