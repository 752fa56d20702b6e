"""pipeline: configuration, inputs, the Ray Data graph, writers and the ``faceiqa`` CLI.

Python use without the CLI::

    from pipeline import detect_images
    table = detect_images(["photos/"], "faces.parquet", crops="crops/")
"""

from pipeline.config import Config, ConfigError, load_config
from pipeline.image_jobs import detect_images

__all__ = ["Config", "ConfigError", "detect_images", "load_config"]
