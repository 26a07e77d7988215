"""``python -m diffkit ...`` (and ``torchrun -m diffkit ...``): the same entry point as ``diffkit``.

Under torchrun every rank runs this; only rank 0 prints the result on stdout (errors still reach
stderr from every rank, so a rank that fails alone says why).
"""

import os
import sys

if os.environ.get("RANK", "0") != "0":
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)

from diffkit.cli import main  # noqa: E402 (after stdout is settled)

main()
