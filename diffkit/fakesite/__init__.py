"""The local fake-face site: procedural faces served like thispersondoesnotexist.com, on 127.0.0.1.

The demo scrapes it (so ``diffkit demo`` needs no internet), the tests and benchmarks talk to it over
real sockets, and ``python -m diffkit.fakesite --port 8000`` serves it by hand. See docs/fakesite.md.
"""

from diffkit.fakesite.faces import draw_face, write_face_folder
from diffkit.fakesite.site import FAULT_KINDS, FaceSite, SiteConfig

__all__ = ["FAULT_KINDS", "FaceSite", "SiteConfig", "draw_face", "write_face_folder"]
