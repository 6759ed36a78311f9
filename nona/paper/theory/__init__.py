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
    appendix_d_lambda,
    appendix_d_lambda_range,
    qp_optimum,
    appendix_d_allocation,
    printed_case,
    solve_qp_slsqp,
    optimal_vertices,
    QPStudy,
    appendix_d_study,
)
from nona.paper.theory.attention import (
    synthetic_task,
    ToyFit,
    fit_toy_nona,
    attention_weights,
    predictions,
    Triplets,
    intermediate_triplets,
    extreme_pairs,
    bracket_mass,
    effective_neighbours,
    log_correlations,
)
from nona.paper.theory.expansion import (
    Neighbourhood,
    neighbourhood,
    mse_form,
    delta_form,
    pairwise_terms,
    triplet_terms,
    printed_expansion,
    corrected_expansion,
    label_spread,
    attraction,
    ambiguity_form,
    ambiguity_form_unnormalised,
    identity_residual,
    printed_expansion_counterexample,
    general_forms,
    equation,
)
from nona.paper.theory.triplets import (
    TripletSymbols,
    triplet_symbols,
    triplet_objective,
    printed_triplet_formulas,
    triplet_minimiser,
    conditional_triplet_minimiser,
    OrderingCase,
    ordering_cases,
    triplet_allocation,
    brute_force_triplet,
    sample_orderings,
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
