"""``python -m skpatch``: the same as the ``skpatch`` command (see ``skpatch --help``)."""

import sys

from skpatch._cli import main

if __name__ == "__main__":
    sys.exit(main())
