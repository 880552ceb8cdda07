rule cluster:
    input:
        "results/{dataset}/directions.h5ad",
    output:
        embedding=directory(EMBEDDING) if EMBEDDING_FORMAT == "zarr" else EMBEDDING,
        metrics="results/{dataset}/metrics.json",
        index="results/{dataset}/embedding.faiss",  # written beside the embedding (rlae_sc.pipeline.index_path)
    log:
        "logs/{dataset}/cluster.log",
    benchmark:
        "logs/{dataset}/cluster.benchmark.tsv"  # wall time and peak memory of the stage (Snakemake's benchmark)
    params:
        rlae=RLAE,
        flags=lambda wc: stage_flags(wc.dataset, "cluster"),
        label=label_flag,
    threads: threads_by_size
    resources:
        mem_mb=mem_mb_for(2000, 3),
        runtime=runtime_for(15, 15),
    conda:
        "../envs/rlae-sc.yaml"
    shell:
        "{params.rlae} cluster {input} --out {output.embedding} --metrics {output.metrics} {params.label} "
        "{params.flags} > {log} 2>&1"
