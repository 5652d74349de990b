"""`python -m kinema` is the `kinema` command (what torchrun needs: `torchrun ... -m kinema train ...`)."""

import sys

from kinema.cli import main

sys.exit(main())
