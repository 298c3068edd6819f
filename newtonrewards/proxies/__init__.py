"""Reward proxies at scale: reference features for the mass term, and validation of the proxies on NewtonBench."""
