"""Run the command-line interface: ``python -m jaxlogits <command> ...``."""

import sys

from jaxlogits.cli import main

if __name__ == "__main__":
    sys.exit(main())
