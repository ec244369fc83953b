"""Benchmarks run by `make bench` (`python -m bench`).

Every figure is printed beside a ceiling measured in the same run on the same
machine, as a ratio, because absolute figures on a shared two-core machine mean
little on their own. Each benchmark runs several rounds and reports medians.
"""
