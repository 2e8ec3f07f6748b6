"""Releasing a package to a cluster: the ordered steps (run.STEPS), what they share (context), what they record
(report). Nothing is imported here, so that reading the options does not load the ML libraries."""
