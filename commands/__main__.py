"""`python -m commands ...` is `textstream ...` (tests and benches start workers this way)."""

import sys

from commands.main import main

sys.exit(main())
