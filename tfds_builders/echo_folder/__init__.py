"""See the builder module."""
