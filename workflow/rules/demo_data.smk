rule demo_data:
    output:
        "data/generated/{name}.h5ad",
    log:
        "logs/demo_data/{name}.log",
    wildcard_constraints:
        name="synthetic|synthetic_query|pbmc68k_reduced",
    params:
        rlae=RLAE,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/rlae-sc.yaml"
    shell:
        "{params.rlae} demo-data {wildcards.name} --out {output} > {log} 2>&1"
