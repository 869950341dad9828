"""``python -m hssn`` (and ``torchrun -m hssn``) = the ``hssn`` command."""
import sys

from hssn.cli import main

sys.exit(main())
