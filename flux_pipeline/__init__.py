"""flux-pipeline: a declarative pipeline runner for the Flux Kontext image task API."""

__version__ = "0.1.0"

# Set by the entry's early handler of SIGTERM and SIGHUP (flux_pipeline/__main__.py), which
# raises an interrupt. A library may catch it and raise something else (pydantic building a
# model's validator gives a SchemaError) or drop it (an exception in a callback from C code is
# "ignored"): the command line then does not start the command, or ends it as interrupted,
# exit 3 (flux_pipeline/cli/__init__.py).
early_interrupt = False
