"""`python -m damond` is the `damond` command."""
import sys

from damond.cli import main

sys.exit(main())
