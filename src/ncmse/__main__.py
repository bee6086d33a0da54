import sys

from ncmse.cli.main import main

sys.exit(main())
