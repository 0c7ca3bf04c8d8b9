"""Developer tooling for this repository (not part of the published provider package)."""
