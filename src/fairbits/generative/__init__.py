"""FairGen latent-space core: rebalance a face generator's output without retraining it.

Works on latent codes and attribute scores only (numpy / scipy / scikit-learn), so any
latent model can be plugged in: fit linear attribute boundaries in latent space
(:mod:`.boundaries`), build per-subgroup Gaussian mixtures of edited codes and sample
them with target proportions (:mod:`.sampler`), and measure the result
(:mod:`.metrics`). Subgroup order everywhere: attribute 0 is the most significant bit,
``(0,0), (0,1), (1,0), (1,1)`` for two attributes.
"""

from fairbits.generative.boundaries import (Boundary, conditional_directions, conditional_normal, edit,
                                            edit_many, fit_boundary, orthogonalize, signed_distance)
from fairbits.generative.metrics import (diversity, fairness_discrepancy, frechet_distance, kl_divergence,
                                         precision_recall, proportion_cis, subgroup_labels, subgroup_proportions,
                                         subgroups, target_proportions)
from fairbits.generative.sampler import (FairLatentSampler, ImportanceReweighter, PlainSampler, RejectionSampler,
                                         SamplingError, allocate_counts)

__all__ = [
    "Boundary", "FairLatentSampler", "ImportanceReweighter", "PlainSampler", "RejectionSampler", "SamplingError",
    "allocate_counts", "conditional_directions", "conditional_normal", "diversity", "edit", "edit_many",
    "fairness_discrepancy", "fit_boundary", "frechet_distance", "kl_divergence", "orthogonalize",
    "precision_recall", "proportion_cis", "signed_distance", "subgroup_labels", "subgroup_proportions",
    "subgroups", "target_proportions",
]
