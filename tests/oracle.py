"""The oracle the tests compare every backend against: the public ops on the reference backend, inputs validated
as for any backend, NaN losses propagated (the NaN policy belongs to the public layer, not to the spec), and the
reference's triplet table (:func:`hssn_kernels.reference._sample_triplets_padded`, validated first)."""
import functools

import hssn_kernels as hk
from hssn_kernels import _checks
from hssn_kernels import reference as spec

LOSSES = ("focal_tree_min_loss", "tree_min_loss", "focal_bce_loss", "bce_loss", "leaf_cross_entropy",
          "released_hiera_loss", "tree_triplet_loss", "vanilla_triplet_loss")

globals().update({name: functools.partial(getattr(hk, name), backend="reference", nan_policy="propagate")
                  for name in LOSSES})
hierarchical_argmax = functools.partial(hk.hierarchical_argmax, backend="reference")
sample_triplets = functools.partial(hk.sample_triplets, backend="reference")
project_to_level = hk.project_to_level
hash32, triplet_rand, _triplet_loss = spec.hash32, spec.triplet_rand, spec._triplet_loss


def sample_triplets_padded(target, hierarchy, num_triplets=200, seed=0, ignore_index=255, mode="tree"):
    """The reference's padded (num_triplets, 3) table and count, after the public layer's input rules."""
    target, num_triplets, seed = _checks.sampling_inputs(target, hierarchy, num_triplets, seed, ignore_index, mode,
                                                         validate=False)
    return spec._sample_triplets_padded(target, hierarchy, num_triplets, seed, ignore_index, mode)
