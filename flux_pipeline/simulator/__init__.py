"""The Flux Kontext API simulator. Imports nothing from the rest of flux_pipeline."""
