rule demo_data:
    output:
        "data/generated/{name}.h5ad",
    log:
        "logs/demo_data/{name}.log",
    wildcard_constraints:
        name="synthetic|synthetic_query|pbmc68k_reduced",
    params:
        rlae=RLAE,
    conda:
        "../envs/rlae-sc.yaml"
    shell:
        "{params.rlae} demo-data {wildcards.name} --out {output} > {log} 2>&1"
