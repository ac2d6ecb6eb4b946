"""Reporting, from result rows: the markdown report, the per-attacker protection table and its statistics, figures,
and the expectations an experiment checks. Pure functions of the rows; the sweep decides where files go."""
