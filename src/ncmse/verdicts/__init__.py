"""The verdicts of SPEC §7 and §9 on a run's rows: claims, the central-path fit, what a run
records, pairing of runs for claim 4, and the controls."""
