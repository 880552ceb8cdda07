"""Federated fit: sites that cannot share cells train one model on the sums of their statistics.

Every statistic the fit needs is a sum over cells (docs/theory.rst), so a
coordinator can fit the pooled model from the sites' sums, in secure mode
without seeing any one site's. Modules: :mod:`~rlae_sc.federated.statistics`
(a site's sums per round, fixed-point encoding), :mod:`~rlae_sc.federated.plan`
(the rounds and the decisions taken from the sums), :mod:`~rlae_sc.federated.secure`
(pairwise masking), :mod:`~rlae_sc.federated.protocol` (messages, TLS),
:mod:`~rlae_sc.federated.coordinator` and :mod:`~rlae_sc.federated.site` (the
two processes), :mod:`~rlae_sc.federated.local` (``rlae-sc federate``),
:mod:`~rlae_sc.federated.trusted` (file mode), :mod:`~rlae_sc.federated.cli`.
"""

from __future__ import annotations


class FederationError(RuntimeError):
    """A federated run cannot go on: a site dropped out, disagrees with the others, or broke the protocol.

    The message names the site and round when known, the problem and what to do.
    """
