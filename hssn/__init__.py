"""hssn: the HSSN training stack (datasets, models, engine, CLI) built on hssn_kernels."""
__version__ = "0.1.0"
