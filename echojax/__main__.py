"""``python -m echojax``: the ``echojax`` command (``echojax.cli``)."""

import sys

from echojax.cli import main

sys.exit(main())
