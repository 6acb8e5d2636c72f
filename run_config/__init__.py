"""Shared run plumbing: config loading, errors, seeding, atomic outputs."""

from run_config.errors import ConfigError, DataError, LexiconError
from run_config.loader import StageConfig, load_config

__all__ = ["ConfigError", "DataError", "LexiconError", "StageConfig", "load_config"]
