"""The floodwatch supervisor, from a checkout: `python supervisor.py --config FILE` (= `floodwatch run`).

A thin entry: the supervisor lives in floodwatch/runtime/supervisor/. This file is not installed as a
module (a top-level `supervisor` would clash with supervisord's package on the hosts we run on).
"""

import sys

from floodwatch.runtime.supervisor.main import main

if __name__ == "__main__":
    sys.exit(main())
