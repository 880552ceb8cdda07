"""``python -m rlae_sc`` runs the ``rlae-sc`` command line."""

import sys

from rlae_sc.cli import main

sys.exit(main())
