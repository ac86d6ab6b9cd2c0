"""erniekit: PaddlePaddle-native training and fine-tuning of ERNIE 4.5 and Llama-family models.

Importing this package is cheap: Paddle is only loaded by the modules that compute (models, trainer, ...).
Entry points call :func:`erniekit.runtime.configure_cpu_runtime` before that happens.
"""

__version__ = "0.1.0"
