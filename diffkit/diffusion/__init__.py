"""Diffusion maths: noise schedules, the Gaussian forward process and loss, reverse-process samplers."""
