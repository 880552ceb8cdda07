rule directions:
    input:
        preprocessed="results/{dataset}/preprocessed.h5ad",
        model="results/{dataset}/model.npz",
    output:
        "results/{dataset}/directions.h5ad",
    log:
        "logs/{dataset}/directions.log",
    benchmark:
        "logs/{dataset}/directions.benchmark.tsv"  # wall time and peak memory of the stage (Snakemake's benchmark)
    params:
        rlae=RLAE,
        passes=lambda wc: pass_flags(wc.dataset),
    threads: pass_threads
    resources:
        mem_mb=mem_mb_for(2000, 0.5),
        runtime=runtime_for(10, 2),
    conda:
        "../envs/rlae-sc.yaml"
    shell:
        "{params.rlae} directions {input.preprocessed} {input.model} --out {output} {params.passes} > {log} 2>&1"
