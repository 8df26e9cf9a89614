"""archbench: which neural-network architecture gives the most accuracy for its cost?

Train architectures on real datasets, measure every cost (parameters, saved
size, FLOPs, peak training memory, time), and report with uncertainty.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
