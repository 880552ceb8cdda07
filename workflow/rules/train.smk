rule train:
    input:
        "results/{dataset}/preprocessed.h5ad",
    output:
        model="results/{dataset}/model.npz",
        trace="results/{dataset}/model.trace.tsv",
    log:
        "logs/{dataset}/train.log",
    benchmark:
        "logs/{dataset}/train.benchmark.tsv"  # wall time and peak memory of the stage (Snakemake's benchmark)
    params:
        rlae=RLAE,
        flags=lambda wc: stage_flags(wc.dataset, "train"),
        passes=lambda wc: pass_flags(wc.dataset),
    threads: pass_threads
    resources:
        mem_mb=mem_mb_for(2000, 0.1),
        runtime=runtime_for(10, 2),
    conda:
        "../envs/rlae-sc.yaml"
    shell:
        "{params.rlae} train {input} --out {output.model} {params.flags} {params.passes} > {log} 2>&1"
