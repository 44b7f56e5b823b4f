"""Catalogs: models, hardware and agent profiles, each number with its source."""
