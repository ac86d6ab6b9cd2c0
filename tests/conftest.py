"""Test-suite wide setup: thread/MKL settings must be in place before any test imports Paddle."""

from erniekit.runtime import setup_runtime

setup_runtime()
