"""The regularized linear autoencoder on plain tensors, without AnnData: its losses (:mod:`.losses`), the
default solver (:mod:`.solvers`), learning rules (:mod:`.rules`), metric traces (:mod:`.trace`) and closed
forms (:mod:`.theory`).

The algorithms' names are defined here, once, and without importing torch: the parameter model
(:class:`rlae_sc.params.TrainParams`) and the command line offer them.
"""

SOLVER = "tied_exact"  # the default solver: rlae_sc.lae.solvers.fit_tied_exact
FEEDBACK_RULES = ("feedback_alignment", "kolen_pollack", "weight_mirror")  # rules without weight transport
RULES = ("gd", "adam", "rotation", "oja", "gha", "alternating", "tied_ridge", "gd_oja", *FEEDBACK_RULES)
SOLVERS = (SOLVER, *RULES)  # every value of TrainParams.solver
