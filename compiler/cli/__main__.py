"""`python -m sidegate.compiler.cli`: the ``sidegate`` command."""

import sys

from sidegate.compiler.cli.main import main

sys.exit(main())
