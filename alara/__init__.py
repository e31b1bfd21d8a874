"""alara: end-to-end learned CT dose modulation (End2end-ALARA) on fast CT operators."""

from alara.geometry import FanBeam, ImageGrid, ParallelBeam, lodopab

__version__ = "0.1.0"

__all__ = ["FanBeam", "ImageGrid", "ParallelBeam", "lodopab", "__version__"]
