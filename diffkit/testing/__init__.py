"""Helpers that only the tests and benchmarks use (generated Inception and DINOv2 weights). Product code
never imports this package; the fake-face site the demo uses lives in :mod:`diffkit.fakesite`."""
