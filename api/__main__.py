"""`python -m api` is the `rag` command."""

import sys

from api.cli.main import main

sys.exit(main())
