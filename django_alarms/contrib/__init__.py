"""Integrations with other packages, each importable only when that package is installed."""
