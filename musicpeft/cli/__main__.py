"""``python -m musicpeft.cli``: the ``musicpeft`` command (``accelerate launch -m musicpeft.cli train ...``)."""

import sys

from . import main

sys.exit(main())
