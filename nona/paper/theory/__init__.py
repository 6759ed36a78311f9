"""The theory of the NONA paper (Section 4.1 and Appendix D), checked: sympy identities, allocation optima, a toy model.

* :mod:`~nona.paper.theory.expansion`: the per-anchor MSE term in the forms the paper
  prints, the corrected pairwise/triplet expansion and the "ambiguity" decomposition.
* :mod:`~nona.paper.theory.triplets`: the triplet subproblem ``T_ijk`` and its closed form.
* :mod:`~nona.paper.theory.appendix_d`: the M-neighbour quadratic program of Appendix D.
* :mod:`~nona.paper.theory.attention`: a small NONA model on a synthetic task and the
  statistics that compare its learned attention with the allocations the theory predicts.

The names of the four modules are re-exported here, so ``from nona.paper import theory as th``
reaches all of them.
"""

from nona.paper.theory.appendix_d import (
    QPStudy,
    appendix_d_allocation,
    appendix_d_lambda,
    appendix_d_lambda_range,
    appendix_d_study,
    optimal_vertices,
    printed_case,
    qp_optimum,
    solve_qp_slsqp,
)
from nona.paper.theory.attention import (
    ToyFit,
    Triplets,
    attention_weights,
    bracket_mass,
    effective_neighbours,
    extreme_pairs,
    fit_toy_nona,
    intermediate_triplets,
    log_correlations,
    predictions,
    synthetic_task,
)
from nona.paper.theory.expansion import (
    Neighbourhood,
    ambiguity_form,
    ambiguity_form_unnormalised,
    attraction,
    corrected_expansion,
    delta_form,
    equation,
    general_forms,
    identity_residual,
    label_spread,
    mse_form,
    neighbourhood,
    pairwise_terms,
    printed_expansion,
    printed_expansion_counterexample,
    triplet_terms,
)
from nona.paper.theory.triplets import (
    OrderingCase,
    TripletSymbols,
    brute_force_triplet,
    conditional_triplet_minimiser,
    ordering_cases,
    printed_triplet_formulas,
    sample_orderings,
    triplet_allocation,
    triplet_minimiser,
    triplet_objective,
    triplet_symbols,
)

__all__ = [
    "Neighbourhood",
    "OrderingCase",
    "QPStudy",
    "ToyFit",
    "TripletSymbols",
    "Triplets",
    "ambiguity_form",
    "ambiguity_form_unnormalised",
    "appendix_d_allocation",
    "appendix_d_lambda",
    "appendix_d_lambda_range",
    "appendix_d_study",
    "attention_weights",
    "attraction",
    "bracket_mass",
    "brute_force_triplet",
    "conditional_triplet_minimiser",
    "corrected_expansion",
    "delta_form",
    "effective_neighbours",
    "equation",
    "extreme_pairs",
    "fit_toy_nona",
    "general_forms",
    "identity_residual",
    "intermediate_triplets",
    "label_spread",
    "log_correlations",
    "mse_form",
    "neighbourhood",
    "optimal_vertices",
    "ordering_cases",
    "pairwise_terms",
    "predictions",
    "printed_case",
    "printed_expansion",
    "printed_expansion_counterexample",
    "printed_triplet_formulas",
    "qp_optimum",
    "sample_orderings",
    "solve_qp_slsqp",
    "synthetic_task",
    "triplet_allocation",
    "triplet_minimiser",
    "triplet_objective",
    "triplet_symbols",
    "triplet_terms",
]
