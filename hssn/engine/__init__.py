"""Training, evaluation and prediction for HSSN models, driven by YAML configs (see docs/engine.md).

Import the modules themselves (``hssn.engine.config``, ``.trainer``, ``.evaluator``, ``.metrics``, ...);
this package imports nothing, so that ``hssn configs`` (configs only) does not import torch.
"""
