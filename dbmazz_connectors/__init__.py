"""dbmazz connector library: sources, sinks, the change log and the plain-Python engine (no Dagster here)."""
