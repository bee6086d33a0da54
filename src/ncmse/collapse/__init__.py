"""The measurement core: class statistics, the geometry of SPEC §2, the MSE decomposition of
SPEC §3, and the measure_* front-ends. Imports nothing of ncmse above it.

``frontend`` (the classifier of a model found by execution, the features of each batch) and
``sampling`` (which samples a loader gives) are the model/loader front-end of
``ncmse.measure``: they live here because the public ``measure`` calls them and the core
imports nothing from a higher layer.
"""
