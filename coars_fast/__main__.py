"""`python -m coars_fast ...`: the same command line as `coars-fast ...`."""

import sys

from coars_fast.cli import main

sys.exit(main())
