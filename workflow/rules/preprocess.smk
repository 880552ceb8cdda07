rule preprocess:
    input:
        lambda wc: dataset_entry(wc)["path"],
    output:
        "results/{dataset}/preprocessed.h5ad",
    log:
        "logs/{dataset}/preprocess.log",
    benchmark:
        "logs/{dataset}/preprocess.benchmark.tsv"  # wall time and peak memory of the stage (Snakemake's benchmark)
    params:
        rlae=RLAE,
        flags=lambda wc: stage_flags(wc.dataset, "preprocess"),
        read=lambda wc: read_flags(dataset_entry(wc)),
        label=label_flag,
        passes=lambda wc: pass_flags(wc.dataset, streaming=True),
    threads: pass_threads
    resources:
        mem_mb=preprocess_mem_mb(2000, 3),
        runtime=runtime_for(10, 4),
    conda:
        "../envs/rlae-sc.yaml"
    shell:
        "{params.rlae} preprocess {input} --out {output} {params.read} "
        "{params.label} {params.flags} {params.passes} > {log} 2>&1"
