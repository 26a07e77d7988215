"""Test helpers: procedural faces and a local fake-face HTTP site. Product code must not import this."""

from diffkit.testing.faces import draw_face, write_face_folder

__all__ = ["draw_face", "write_face_folder"]
