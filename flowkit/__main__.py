"""``python -m flowkit`` (and ``torchrun -m flowkit``): the command line of flowkit.models.

The one place where the core reaches the application, and only when run as a program.
"""

import sys

from flowkit.models.cli import main

sys.exit(main())
