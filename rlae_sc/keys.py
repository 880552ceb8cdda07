"""Where rlae-sc's results go in an AnnData (scanpy's slots), defined once for every module."""

EMBEDDING_KEY = "X_rlae"  # obsm: the LAE embedding, cells x k (PCA scores, as obsm['X_pca'] in scanpy)
DIRECTIONS_KEY = "rlae_directions"  # varm: the principal directions, genes x k (as varm['PCs'] in scanpy)
UNS_KEY = "rlae"  # uns: eigenvalues, variance ratios, lambda, parameters, the exact-PCA check (as uns['pca'] in scanpy)
HARMONY_KEY = "X_rlae_harmony"  # obsm: the embedding corrected by Harmony for the batches, cells x n_dims
