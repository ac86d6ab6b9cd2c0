"""Test-suite wide setup: thread/MKL settings must be in place before any test imports Paddle."""

from erniekit.runtime import configure_cpu_runtime

configure_cpu_runtime()
