"""``python -m ncmse``: the ``ncmse`` command line (the same as the ``ncmse`` script)."""

import sys

from ncmse.cli.main import main

sys.exit(main())
