"""`python -m floodwatch.server ...` is `floodwatch server ...`."""

import sys

from floodwatch.server.cli import main

sys.exit(main())
