"""Human-readable and machine-readable renderings of estimates, validations and search results."""
