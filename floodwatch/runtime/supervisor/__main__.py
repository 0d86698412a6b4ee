"""`python -m floodwatch.runtime.supervisor --config FILE`: the same as `floodwatch run`."""

import sys

from floodwatch.runtime.supervisor.main import main

sys.exit(main())
