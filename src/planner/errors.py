"""The public error classes. The CLI turns each into a one-line message and an exit code."""


class PlannerError(Exception):
    """Base class of every error the user can cause. `exit_code` is what the CLI returns."""

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return f"{self.problem} ({self.fix})" if self.fix else self.problem


class CatalogError(PlannerError):
    """An unknown model or GPU name, or a catalog/config file that cannot be read."""


class PlanError(PlannerError):
    """A plan that cannot exist: degrees that do not divide, a batch that does not split, bad numbers."""


class NoFeasiblePlanError(PlannerError):
    """The search found no plan that fits. Exit code 3 so scripts can tell it from bad input."""

    exit_code = 3
