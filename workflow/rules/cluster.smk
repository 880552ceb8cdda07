rule cluster:
    input:
        "results/{dataset}/directions.h5ad",
    output:
        embedding="results/{dataset}/embedding.h5ad",
        metrics="results/{dataset}/metrics.json",
    log:
        "logs/{dataset}/cluster.log",
    params:
        rlae=RLAE,
        flags=lambda wc: cli_flags(stage_params(wc.dataset, "cluster")),
        label=label_flag,
    conda:
        "../envs/rlae-sc.yaml"
    shell:
        "{params.rlae} cluster {input} --out {output.embedding} --metrics {output.metrics} {params.label} "
        "{params.flags} > {log} 2>&1"
