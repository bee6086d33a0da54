"""The measurement core: class statistics, the geometry of SPEC §2, the MSE decomposition of
SPEC §3, and the measure_* front-ends. Imports nothing of ncmse above it."""
