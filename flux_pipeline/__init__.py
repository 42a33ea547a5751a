"""flux-pipeline: a declarative pipeline runner for the Flux Kontext image task API."""

__version__ = "0.1.0"

# Set by the entry's early handler of SIGTERM and SIGHUP (flux_pipeline/__main__.py), which
# raises an interrupt: a library that catches it while it runs and raises something else
# (pydantic building a model's validator gives a SchemaError) still ends the command as
# interrupted, exit 3, not as an internal error (flux_pipeline/cli/__init__.py).
early_interrupt = False
