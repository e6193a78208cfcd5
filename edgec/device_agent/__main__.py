"""``python -m edgec.device_agent``: the agent's command line from the source tree (devices run the zipapp)."""

import sys

from edgec.device_agent.cli import main

sys.exit(main())
