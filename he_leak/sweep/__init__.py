"""A sweep: an experiment file expanded into runs (experiment, grid), checked before the first one (preflight),
executed by an engine's workers (worker), recorded by the driver alone (driver, store, lock), shown (progress) and
summarised without running anything (status)."""
