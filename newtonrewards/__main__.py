"""`python -m newtonrewards` is the same as the `newtonrewards` command."""

import sys

from newtonrewards.cli import main

sys.exit(main())
