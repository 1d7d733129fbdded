"""course_lib: the reusable code behind the Unsupervised Semantic Segmentation course.

Sub-packages: ``config``, ``data`` (toy world, real datasets), ``models`` (DINO ViT, backbones, feature
cache), ``ssl`` (DINO, SwAV), ``stego``, ``luss`` (PASS), ``segsort``, ``evaluation`` (metrics, protocols,
CRF) and ``viz`` (palettes and figures). Each notebook lesson imports its concept from here.
"""
__version__ = "0.1.0"
