"""Scoring a run: per-sample matching and metrics (score, metrics), the attacker's label-aware prior (prior) and what
the protection costs the model (utility_accuracy)."""
