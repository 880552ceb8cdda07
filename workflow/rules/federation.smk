# Federated fits (config `federation:`): one model from several sites' files, each site in its own process,
# coordinator and sites talking over TLS on 127.0.0.1 (`rlae-sc federate`; docs/guide/federated.rst).
# Outputs: results/federation/<name>/model.npz, federation.json and sites/<site file stem>/ (each site's
# embedding.h5ad, metrics.json, report.html), listed in results/index.html.
rule federate:
    input:
        sites=lambda wc: federation_entry(wc)["sites"],
    output:
        model="results/federation/{federation}/model.npz",
        summary="results/federation/{federation}/federation.json",
    log:
        "logs/federation/{federation}.log",
    params:
        rlae=RLAE,
        flags=federation_flags,
        out="results/federation/{federation}",
    threads: lambda wc: len(config["federation"][wc.federation]["sites"]) + 1
    resources:
        mem_mb=lambda wc, input: math.ceil(1500 * (len(input.sites) + 1) + 3 * input_mb(input)),
        runtime=lambda wc, input: math.ceil(15 + 10 * input_mb(input) / 1024),
    conda:
        "../envs/rlae-sc.yaml"
    shell:
        "{params.rlae} federate {input.sites} --out {params.out} {params.flags} > {log} 2>&1"
