"""Experiments on the synthetic scenes: ``hssn demo`` (:mod:`.demo`) and its ablations (:mod:`.ablation`)."""
