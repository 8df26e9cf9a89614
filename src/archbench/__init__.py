"""archbench: which neural-network architecture gives the most accuracy for its cost?

Train architectures on real datasets, measure every cost (parameters, saved
size, FLOPs, peak training memory, time), and report with uncertainty.

    >>> import archbench
    >>> result = archbench.compare(["mlp", "cnn"], seeds=[0, 1, 2])
    >>> result.to_dataframe()
"""

from typing import Any

from archbench._version import __version__

__all__ = ["Profile", "StudyResult", "UnitsFailedWarning", "__version__", "compare", "load_run", "profile"]


def __getattr__(name: str) -> Any:  # lazy: `import archbench` stays cheap
    if name in ("compare", "load_run", "profile", "Profile", "StudyResult", "UnitsFailedWarning"):
        from archbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'archbench' has no attribute {name!r}")
