"""Tunix training back end.  Import :mod:`runners.tunix.runner` for the runner (pulls in jax);
:mod:`runners.tunix.config` is the cheap, jax-free half (spec validation, metric names)."""

from runners.tunix.config import METRIC_NAMES, validate_config, validate_phase

__all__ = ["METRIC_NAMES", "validate_config", "validate_phase"]
