"""`python -m compiler.cli`: the ``sidegate`` command."""

import sys

from compiler.cli.main import main

sys.exit(main())
