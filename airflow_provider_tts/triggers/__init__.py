"""See the package docstring; this package only groups modules."""
