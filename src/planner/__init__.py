"""planner: a training-plan optimizer for large language models.

The flow is one-directional: catalog (YAML -> typed specs) -> memory and performance models (pure
functions of a Plan) -> search -> ranking -> reports / launch configs -> CLI.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("planner")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+source"

from planner.api import Solution, estimate, solve

__all__ = ["Solution", "__version__", "estimate", "solve"]
