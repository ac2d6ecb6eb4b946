"""Benchmarks: the original DLG loop against the project's attacks, each with its own stopping rule (run, methods,
report), and a median timer for the HE benchmark scripts (timing)."""
