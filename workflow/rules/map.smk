rule map_query:
    input:
        counts=lambda wc: config["queries"][wc.query]["path"],
        model=lambda wc: f"results/{query_reference(wc)}/model.npz",
        reference=lambda wc: EMBEDDING.format(dataset=query_reference(wc)),
        index=lambda wc: f"results/{query_reference(wc)}/embedding.faiss",  # read by `map` beside the reference
    output:
        html="results/mapping/{query}/report.html",
        mapped="results/mapping/{query}/mapped.h5ad",
        summary="results/mapping/{query}/mapping.json",
        figures=[
            report(
                f"results/mapping/{{query}}/figures/{name}.png",
                caption=f"../report/{name}.rst",
                category="mapping",
                subcategory="{query}",
            )
            for name in ["mapped_umap", "confidence"]
        ],
    log:
        "logs/mapping/{query}.log",
    params:
        rlae=RLAE,
        flags=lambda wc: cli_flags(config.get("mapping", {}), MappingParams),
        label=lambda wc: label_flag_for(query_reference(wc)),
        read=lambda wc: read_flags(config["queries"][wc.query]),
        truth=lambda wc: cli_flags(config["queries"][wc.query], LabelParams),
    threads: threads_by_size
    resources:
        mem_mb=mem_mb_for(2000, 3),
        runtime=runtime_for(10, 10),
    conda:
        "../envs/rlae-sc.yaml"
    shell:
        "{params.rlae} map {input.counts} --model {input.model} --reference {input.reference} "
        "--out-dir results/mapping/{wildcards.query} {params.label} {params.truth} {params.read} {params.flags} > {log} 2>&1"
