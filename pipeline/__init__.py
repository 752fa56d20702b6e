"""pipeline: configuration, inputs, the Ray Data graph, writers and the ``faceiqa`` CLI.

Python use without the CLI::

    import pipeline
    frames = pipeline.run(["videos/"], "out/")            # the main job; the frame table
    table = pipeline.detect_images(["photos/"], "faces.parquet", crops="crops/")
"""

from pipeline.config import Config, ConfigError, load_config
from pipeline.image_jobs import detect_images, score_images
from pipeline.run_job import run

__all__ = ["Config", "ConfigError", "detect_images", "load_config", "run", "score_images"]
