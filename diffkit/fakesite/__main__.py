"""``python -m diffkit.fakesite --port 8000``: serve the fake-face site until Ctrl-C."""

from diffkit.fakesite.cli import main

raise SystemExit(main())
