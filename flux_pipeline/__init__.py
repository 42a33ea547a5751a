"""flux-pipeline: a declarative pipeline runner for the Flux Kontext image task API."""

__version__ = "0.1.0"
