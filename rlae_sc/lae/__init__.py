"""The regularized linear autoencoder on plain tensors, without AnnData: its losses (:mod:`.losses`), the
default solver (:mod:`.solvers`), learning rules (:mod:`.rules`), metric traces (:mod:`.trace`) and closed
forms (:mod:`.theory`).

The algorithms' names (``SOLVER``, ``RULES``, ``FEEDBACK_RULES``, ``SOLVERS``) are defined once, in the
parameter model (:mod:`rlae_sc.params`), which the command line and this package both read.
"""
