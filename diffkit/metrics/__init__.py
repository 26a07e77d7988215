"""The maths of evaluation: FID / KID / IS / precision-recall-density-coverage / memorization, the
feature extractors (Inception, VGG16, DINOv2) and their weights, reference statistics files.

The ``diffkit eval`` command around them (config, sampling, report) is :mod:`diffkit.eval`.
"""
