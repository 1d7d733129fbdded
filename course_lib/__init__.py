"""course_lib: the reusable code behind the Unsupervised Semantic Segmentation course.

Sub-packages: ``config``, ``data`` (toy world, real datasets), ``models`` (DINO ViT, backbones, feature
cache), ``ssl`` (DINO, SwAV), ``stego``, ``luss`` (PASS), ``segsort``, ``evaluation`` (metrics, protocols,
CRF) and ``viz`` (palettes and figures). Each notebook lesson imports its concept from here.

Sub-packages whose modules need heavy libraries (torch, torchvision, scikit-learn) export their names
lazily with :func:`lazy_exports`, so that a light module (the ImageNet-S evaluator CLI) starts fast.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Iterable, Mapping

__version__ = "0.1.0"


def lazy_exports(package: str, exports: Mapping[str, Iterable[str]], submodules: Iterable[str] = ()
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``__getattr__``, ``__dir__`` and ``__all__`` for a package that exports names of its submodules
    without importing them (PEP 562): ``exports`` maps a submodule to the names it provides; each
    submodule is imported on the first access to one of its names, or to itself when listed in
    ``submodules``. Use in a package's ``__init__``::

        __getattr__, __dir__, __all__ = lazy_exports(__name__, {"metrics": ("UnsupervisedMetrics",)})
    """
    module_of = {name: module for module, names in exports.items() for name in names}
    submodules = frozenset(submodules) | frozenset(exports)
    if clashes := sorted(set(module_of) & submodules):
        # importing such a submodule rebinds the package attribute to the module, whichever was meant
        raise ValueError(f"{package}: exported names {clashes} are also submodule names; import them from the submodule")
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        if name in module_of:
            value = getattr(importlib.import_module(f".{module_of[name]}", package), name)
        elif name in submodules:
            value = importlib.import_module(f".{name}", package)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value  # later look-ups are plain attribute reads
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(module_of) | submodules)

    return __getattr__, __dir__, sorted(module_of)
