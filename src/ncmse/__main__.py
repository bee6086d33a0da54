import sys

from ncmse.cli import main

sys.exit(main())
