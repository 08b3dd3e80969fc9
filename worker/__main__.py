"""`python -m worker` runs the worker-side commands (the image of a worker needs nothing else)."""

import sys

from worker.cli import main

sys.exit(main())
