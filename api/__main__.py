"""`python -m api` is the `rag` command."""

import sys

from api.cli import main

sys.exit(main())
