"""vlr-workbench engine: pure PyTorch data, models, losses, trainers, evaluation, presets, tips.

Never imports Textual: the CLI and the app in ``workbench`` drive it through ``engine.jobs.registry``.
"""

__version__ = "0.1.0"
