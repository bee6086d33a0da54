"""Front-ends of the ``ncmse train`` and ``ncmse measure`` sub-commands.

Each module exposes ``add_arguments(parser)`` and ``run(args) -> int`` (see :mod:`ncmse.cli`).
"""
