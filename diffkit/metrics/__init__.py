"""The maths of evaluation: FID / KID / IS / precision-recall / memorization, features and weights.

The ``diffkit eval`` command around them (config, sampling, report) is :mod:`diffkit.eval`.
"""
