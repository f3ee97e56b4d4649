"""Baselines trained by methods other than the paper's: ``jem`` (Grathwohl et al. 2020, chapter
"Efficiency")."""
