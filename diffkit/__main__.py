"""``python -m diffkit ...`` (and ``torchrun -m diffkit ...``): the same entry point as ``diffkit``."""

from diffkit.cli import main

main()
