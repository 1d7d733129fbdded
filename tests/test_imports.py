"""Which heavy libraries the light entry points load: checked in a fresh interpreter (issue 21).

The ImageNet-S evaluator is a command researchers run on thousands of files; it needs NumPy and Pillow,
not torchvision, scikit-learn, matplotlib or scikit-image (seconds of import time before any work).
"""
import subprocess
import sys

import pytest

PROBE = """
import runpy, sys
sys.argv = {argv!r}
try:
    {statement}
except SystemExit:
    pass
print("loaded:", *sorted(name for name in {modules!r} if name in sys.modules))
"""

def loaded(statement: str, modules: list[str], argv: tuple[str, ...] = ("python",)) -> set[str]:
    """The names among ``modules`` that a fresh interpreter has loaded after running ``statement``."""
    code = PROBE.format(argv=list(argv), statement=statement, modules=modules)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.splitlines()[-1].split()[1:])


ENTRY_POINTS = {
    "import": ("import course_lib.evaluation.imagenet_s", ("python",)),
    "--help": ("runpy.run_module('course_lib.evaluation.imagenet_s', run_name='__main__')",
               ("imagenet_s", "evaluate", "--help")),
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_the_evaluator_loads_no_torchvision_sklearn_or_matplotlib(entry):
    statement, argv = ENTRY_POINTS[entry]
    assert loaded(statement, ["torchvision", "sklearn", "matplotlib", "scipy.optimize"], argv) == set()


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_the_evaluator_loads_neither_torch_nor_skimage(entry):
    statement, argv = ENTRY_POINTS[entry]
    assert loaded(statement, ["torch", "skimage"], argv) == set()


def test_lazy_package_exports_still_resolve():
    from course_lib import evaluation, models
    from course_lib.evaluation import UnsupervisedMetrics, dense_crf  # noqa: F401 (names load their submodule)
    from course_lib.models import VisionTransformer, load_backbone  # noqa: F401

    assert {"UnsupervisedMetrics", "dense_crf", "semi_supervised_fit"} <= set(evaluation.__all__)
    assert {"load_backbone", "FeatureCache", "build_resnet"} <= set(models.__all__)
    assert evaluation.crf.dense_crf is dense_crf and evaluation.imagenet_s.METRIC_KEYS[0] == "mIoU"
    assert "imagenet_s" in dir(evaluation) and "VisionTransformer" in dir(models)
    from course_lib import data
    from course_lib.data.toyworld import ToyWorld

    assert data.ToyWorld is ToyWorld and "VOC2012" in data.__all__ and "hub" in dir(data)
    assert models.CorruptWeightsError.__name__ == "CorruptWeightsError"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        evaluation.nope  # noqa: B018


def test_an_export_named_like_a_submodule_is_refused():
    from course_lib import lazy_exports

    with pytest.raises(ValueError, match="five_crop"):
        lazy_exports("course_lib.data", {"five_crop": ("five_crop",)})
