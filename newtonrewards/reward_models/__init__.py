"""Frozen utility models behind registries: flow models (velocity proxy) and appearance encoders (mass proxy)."""
