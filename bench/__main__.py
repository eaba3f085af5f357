"""python -m bench: see bench/run, which runs this inside a private mount namespace."""

import sys

from bench.main import main

sys.exit(main())
