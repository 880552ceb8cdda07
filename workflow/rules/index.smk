rule index:
    input:
        metrics=expand("results/{dataset}/metrics.json", dataset=DATASETS),
        reports=expand("results/{dataset}/report.html", dataset=DATASETS),
        mappings=expand("results/mapping/{query}/report.html", query=QUERIES),
        federations=expand("results/federation/{federation}/federation.json", federation=FEDERATIONS),
    output:
        "results/index.html",
    log:
        "logs/index.log",
    params:
        rlae=RLAE,
    threads: 1
    resources:
        mem_mb=mem_mb_for(1000, 1),
        runtime=5,
    conda:
        "../envs/rlae-sc.yaml"
    shell:
        "{params.rlae} index results --out {output} > {log} 2>&1"
