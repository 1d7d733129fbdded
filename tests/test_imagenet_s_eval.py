import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from course_lib.data.folders import DatasetLayoutError
from course_lib.data.label_png import LabelEncodingError, read_imagenet_s_png, write_imagenet_s_png
from course_lib.data.toyworld import ToyWorld, write_imagenet_s_layout
from course_lib.evaluation.boundary import boundary_width, inner_boundary
from course_lib.evaluation.imagenet_s import (
    METRIC_KEYS,
    ImageNetSEvaluator,
    evaluate_folders,
    image_presence,
    load_match,
    main,
    match_from_presence,
    presence_matching,
    save_match,
)

IGNORE = 1000


def reference_scores(pairs, num_classes):
    """The ImageNet-S metrics the plain way, independent of course_lib: one image at a time, a Python
    loop over classes, the boundary of each class by iterated 3×3 erosions (as the official code does
    with OpenCV). ``pairs`` yields (prediction, ground truth) H×W id maps, predictions already matched."""
    k1 = num_classes + 1
    gt_area, pred_area, inter = np.zeros(k1), np.zeros(k1), np.zeros(k1)
    gt_b, pred_b, inter_b = np.zeros(k1), np.zeros(k1), np.zeros(k1)
    size_gt, size_pred, size_inter = np.zeros((4, k1)), np.zeros((4, k1)), np.zeros((4, k1))
    f_sum, correct, n_images = 0.0, 0, 0
    for pred, gt in pairs:
        n_images += 1
        h, w = gt.shape
        d = max(1, int(round(0.03 * math.sqrt(h * h + w * w))))

        def boundary(ids):
            out = np.zeros(ids.shape, bool)
            for v in np.unique(ids):
                mask = ids == v
                out |= mask & ~ndimage.binary_erosion(mask, np.ones((3, 3), bool), iterations=d, border_value=0)
            return out

        gt_boundary, pred_boundary = boundary(gt), boundary(pred)
        valid = gt != IGNORE
        g, p, gb, pb = gt[valid], pred[valid], gt_boundary[valid], pred_boundary[valid]
        for c in range(k1):
            gt_area[c] += np.sum(g == c)
            pred_area[c] += np.sum(p == c)
            inter[c] += np.sum((g == c) & (p == c))
            gt_b[c] += np.sum((g == c) & gb)
            pred_b[c] += np.sum((p == c) & pb)
            inter_b[c] += np.sum((g == c) & (p == c) & gb & pb)
        tp, t, pp = np.sum((g > 0) & (p > 0)), np.sum(g > 0), np.sum(p > 0)
        if tp > 0:
            precision, recall = tp / pp, tp / t
            f_sum += 1.3 * precision * recall / (0.3 * precision + recall)
        counts = [np.sum(p == c) for c in range(1, k1)]
        label = 1 + int(np.argmax(counts))
        correct += int(np.sum(g == label) > 0 and np.sum(p == label) > 0)
        buckets = [[], [], [], []]
        for c in np.unique(g):
            if c == 0:
                continue
            share = math.ceil(100.0 * np.sum(g == c) / g.size)
            buckets[0 if share <= 5 else 1 if share <= 25 else 2 if share <= 50 else 3].append(c)
        for b, classes in enumerate(buckets):
            if not classes:
                continue
            selected = (g == 0) | np.isin(g, classes)
            for c in range(k1):
                size_gt[b, c] += np.sum(g[selected] == c)
                size_pred[b, c] += np.sum(p[selected] == c)
                size_inter[b, c] += np.sum((g[selected] == c) & (p[selected] == c))

    def iou(i, a, b):
        return [i[c] / (a[c] + b[c] - i[c]) if a[c] + b[c] - i[c] > 0 else 0.0 for c in range(k1)]

    scores = {
        "mIoU": 100 * np.mean(iou(inter, gt_area, pred_area)),
        "b_mIoU": 100 * np.mean(iou(inter_b, gt_b, pred_b)),
        "img_acc": 100 * correct / n_images,
        "f_measure": 100 * f_sum / n_images,
    }
    for b, name in enumerate(["S", "MS", "ML", "L"]):
        ious = iou(size_inter[b], size_gt[b], size_pred[b])
        kept = [ious[c] for c in range(k1) if size_gt[b, c] > 0]
        scores[f"mIoU_{name}"] = 100 * np.mean(kept) if kept else None
    return scores


def random_pairs(rng, n_images, num_classes, prediction_ids=None):
    """Blob images with ignore bands and noisy predictions (ids up to ``prediction_ids``)."""
    prediction_ids = num_classes if prediction_ids is None else prediction_ids
    pairs = []
    for _ in range(n_images):
        h, w = rng.integers(12, 40, size=2)
        gt = np.zeros((h, w), np.int64)
        yy, xx = np.mgrid[:h, :w]
        for _ in range(rng.integers(0, 4)):
            cy, cx, ry, rx = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2, h), rng.uniform(2, w)
            blob = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
            gt[blob] = rng.integers(1, num_classes + 1)
            gt[blob & ~ndimage.binary_erosion(blob)] = IGNORE if rng.random() < 0.5 else gt[blob][0]
        pred = np.where(gt == IGNORE, rng.integers(0, prediction_ids + 1), gt)
        pred = np.roll(pred, rng.integers(-2, 3), axis=1)
        noise = rng.random((h, w)) < 0.1
        pred[noise] = rng.integers(0, prediction_ids + 1, size=noise.sum())
        pred[rng.random((h, w)) < 0.01] = IGNORE
        pairs.append((pred, gt))
    pairs.append((np.ones((6, 9), np.int64), np.full((6, 9), IGNORE)))  # an image with only ignore pixels
    pairs.append((np.zeros((7, 5), np.int64), np.zeros((7, 5), np.int64)))  # no foreground anywhere
    return pairs


def evaluate_arrays(pairs, num_classes, match=None):
    evaluator = ImageNetSEvaluator(num_classes, match=match)
    for pred, gt in pairs:
        evaluator.update(pred, gt)
    return evaluator.compute()


def assert_scores_equal(scores, expected):
    assert set(scores) == set(METRIC_KEYS)
    for key in METRIC_KEYS:
        if expected[key] is None:
            assert scores[key] is None, key
        else:
            assert scores[key] == pytest.approx(expected[key], abs=1e-6), key


def write_pairs(root, pairs):
    for index, (pred, gt) in enumerate(pairs):
        name = f"c{index % 3}/img_{index:03d}.png"
        write_imagenet_s_png(root / "pred" / name, pred)
        write_imagenet_s_png(root / "gt" / name, gt)
    return root / "pred", root / "gt"


def test_matches_an_independent_reference_on_random_data():
    rng = np.random.default_rng(0)
    pairs = random_pairs(rng, 14, num_classes=5)
    assert_scores_equal(evaluate_arrays(pairs, 5), reference_scores(pairs, 5))


def test_match_is_applied_before_scoring_including_many_to_one():
    rng = np.random.default_rng(1)
    pairs = random_pairs(rng, 10, num_classes=4, prediction_ids=7)
    match = {0: 0, 1: 3, 2: 1, 3: 2, 4: 4, 5: 4, 6: 0, 7: 1}
    lut = np.array([match.get(i, IGNORE) for i in range(IGNORE + 1)])
    expected = reference_scores([(lut[pred], gt) for pred, gt in pairs], 4)
    assert_scores_equal(evaluate_arrays(pairs, 4, match=match), expected)


def test_perfect_prediction_scores_100():
    gt1 = np.zeros((20, 30), np.int64)
    gt1[5:15, 5:12] = 1
    gt1[4:16, 4] = IGNORE
    gt2 = np.zeros((16, 16), np.int64)
    gt2[2:14, 2:14] = 2
    scores = evaluate_arrays([(gt1, gt1), (gt2, gt2)], 2)
    # class 1 covers 70/588 = 12 % of image 1 (MS), class 2 covers 144/256 = 56 % of image 2 (L)
    assert scores == {"mIoU": 100.0, "b_mIoU": 100.0, "img_acc": 100.0, "f_measure": 100.0,
                      "mIoU_S": None, "mIoU_MS": 100.0, "mIoU_ML": None, "mIoU_L": 100.0}


def test_constant_other_prediction():
    gt = np.zeros((10, 10), np.int64)
    gt[:, :3] = 1  # 30 % of the image: bucket ML
    scores = evaluate_arrays([(np.zeros_like(gt), gt)], 1)
    # d = 1. 'other' boundary: gt 70 - 8×5 interior = 30 px, prediction 100 - 8×8 = 36 px; on both:
    # column 9, rows 0 and 9 of columns 3-8 -> 10 + 12 = 22; class 1 is never predicted
    assert scores["mIoU"] == pytest.approx(100 * (70 / 100 + 0) / 2)
    assert scores["b_mIoU"] == pytest.approx(100 * (22 / (30 + 36 - 22) + 0) / 2)
    assert scores["img_acc"] == 0.0 and scores["f_measure"] == 0.0
    assert scores["mIoU_ML"] == pytest.approx(35.0) and scores["mIoU_S"] is None


def test_hand_computed_boundary_and_all_metrics_on_a_tiny_image():
    gt = np.zeros((4, 6), np.int64)
    gt[:, :3] = 1
    pred = np.zeros((4, 6), np.int64)
    pred[:, :4] = 1
    assert boundary_width(4, 6) == 1 and boundary_width(375, 500) == 19  # round(0.03 * 625 = 18.75)
    expected_gt_boundary = np.ones((4, 6), bool)
    expected_gt_boundary[1:3, 1] = expected_gt_boundary[1:3, 4] = False
    expected_pred_boundary = np.ones((4, 6), bool)
    expected_pred_boundary[1:3, 1:3] = False
    assert np.array_equal(inner_boundary(gt), expected_gt_boundary)
    assert np.array_equal(inner_boundary(pred), expected_pred_boundary)
    scores = evaluate_arrays([(pred, gt)], 1)
    # boundary IoU: class 1: gt 10 px, pred 12 px, both 8; 'other': gt 10, pred 8, both 6
    assert scores["b_mIoU"] == pytest.approx(100 * (8 / 14 + 6 / 12) / 2)
    # IoU: class 1: 12 / 16; 'other': 8 / 12
    assert scores["mIoU"] == pytest.approx(100 * (12 / 16 + 8 / 12) / 2)
    precision, recall = 12 / 16, 1.0
    assert scores["f_measure"] == pytest.approx(100 * 1.3 * precision * recall / (0.3 * precision + recall))
    assert scores["img_acc"] == 100.0
    # class 1 covers exactly 50 %: bucket ML
    assert scores["mIoU_ML"] == pytest.approx(scores["mIoU"])
    assert scores["mIoU_S"] is None and scores["mIoU_MS"] is None and scores["mIoU_L"] is None


def test_border_and_ignore_count_as_boundary_with_wide_windows():
    ids = np.zeros((60, 80), np.int64)  # d = round(0.03 * 100) = 3
    ids[30, 40] = IGNORE
    boundary = inner_boundary(ids)
    interior = np.zeros_like(boundary)
    interior[3:57, 3:77] = True
    interior[27:34, 37:44] = False
    assert np.array_equal(boundary, ~interior)


def test_f_measure_and_image_accuracy_on_three_images():
    gt_a = np.array([[1, 1, 1, 1, 0, 0, 0, 0]])
    pred_a = np.array([[1, 1, 0, 0, 2, 2, 0, 0]])  # P = R = 1/2; classes 1 and 2 tie: the lower id, 1, is right
    gt_b = np.zeros((1, 8), np.int64)
    pred_b = np.zeros((1, 8), np.int64)  # no foreground at all: F = 0 and not a correct image
    gt_c = np.array([[2, 2, 2, 2, 0, 0, 0, 0]])
    pred_c = np.array([[1, 1, 1, 2, 0, 0, 0, 0]])  # F = 1, but the largest predicted class 1 is not in gt
    scores = evaluate_arrays([(pred_a, gt_a), (pred_b, gt_b), (pred_c, gt_c)], 2)
    assert scores["f_measure"] == pytest.approx(100 * (0.5 + 0 + 1) / 3)
    assert scores["img_acc"] == pytest.approx(100 / 3)


def test_size_buckets_by_share_of_non_ignore_pixels():
    gt = np.zeros((10, 10), np.int64)
    gt.flat[:5] = 1  # 5 % -> S
    gt.flat[5:11] = 2  # 6 % -> MS
    gt.flat[11:37] = 3  # 26 % -> ML
    pred = gt.copy()
    pred.flat[5:8] = 1  # half of class 2 predicted as class 1
    gt_large = np.zeros((10, 10), np.int64)
    gt_large.flat[:51] = 4  # 51 % -> L
    scores = evaluate_arrays([(pred, gt), (gt_large, gt_large)], 4)
    # S: 'other' and class 1 only (the mistakes lie on class-2 pixels, scored in MS) -> 100
    # MS: 'other' 1, class 2: 3 / 6; class 1 has no ground truth in MS and is left out -> 75
    assert scores["mIoU_S"] == pytest.approx(100.0)
    assert scores["mIoU_MS"] == pytest.approx(75.0)
    assert scores["mIoU_ML"] == pytest.approx(100.0) and scores["mIoU_L"] == pytest.approx(100.0)
    # 30 px of class 1, 50 ignore, 20 'other': 60 % of the non-ignore pixels -> L, not ML
    gt_ignore = np.zeros((10, 10), np.int64)
    gt_ignore.flat[:30] = 1
    gt_ignore.flat[30:80] = IGNORE
    scores = evaluate_arrays([(np.where(gt_ignore == IGNORE, 0, gt_ignore), gt_ignore)], 1)
    assert scores["mIoU_L"] == pytest.approx(100.0) and scores["mIoU_ML"] is None


def test_ignore_pixels_are_removed_from_every_count():
    gt = np.zeros((12, 12), np.int64)
    gt[2:8, 2:8] = 1
    gt[9:, :] = IGNORE
    pred = gt.copy()
    pred[gt == IGNORE] = 0
    other = pred.copy()
    other[gt == IGNORE] = 2  # whatever is predicted on ignore pixels does not count
    first, second = evaluate_arrays([(pred, gt)], 2), evaluate_arrays([(other, gt)], 2)
    for key in ("mIoU", "img_acc", "f_measure", "mIoU_MS"):
        assert first[key] == pytest.approx(second[key])
    # 'other' and class 1 perfect, class 2 never seen: IoU 0 counts in the mean, as in the official code
    assert first["mIoU"] == pytest.approx(200 / 3)


def test_classes_absent_from_predictions_count_zero():
    gt = np.zeros((8, 8), np.int64)
    gt[:4, :4] = 1
    gt[4:, 4:] = 2
    pred = np.where(gt == 2, 0, gt)
    scores = evaluate_arrays([(pred, gt)], 2)
    # 'other': 32 / 48, class 1: 1, class 2: 0
    assert scores["mIoU"] == pytest.approx(100 * (32 / 48 + 1 + 0) / 3)


def test_ids_above_255_through_the_png_encoding(tmp_path):
    gt = np.zeros((9, 11), np.int64)
    gt[2:7, 3:9] = 300  # R = 44, G = 1
    wrong = np.where(gt == 300, 556, 0)  # R = 44, G = 2: another class
    write_imagenet_s_png(tmp_path / "gt" / "a" / "x.png", gt)
    write_imagenet_s_png(tmp_path / "good" / "a" / "x.png", gt)
    write_imagenet_s_png(tmp_path / "bad" / "a" / "x.png", wrong)
    good = evaluate_folders(tmp_path / "good", tmp_path / "gt", 919, workers=1)
    bad = evaluate_folders(tmp_path / "bad", tmp_path / "gt", 919, workers=1)
    assert good["mIoU"] == pytest.approx(100 * 2 / 920)  # 'other' and 300 perfect, 918 classes absent
    assert bad["mIoU"] == pytest.approx(100 * 1 / 920)
    evaluator = ImageNetSEvaluator(919)
    evaluator.update(read_imagenet_s_png(tmp_path / "good" / "a" / "x.png"), gt)
    assert evaluator.class_iou[300] == 100.0 and evaluator.class_iou[44] == 0.0


def test_merge_equals_one_pass_and_folders_equal_arrays(tmp_path):
    pairs = random_pairs(np.random.default_rng(2), 9, num_classes=3)
    first, second = ImageNetSEvaluator(3), ImageNetSEvaluator(3)
    for index, (pred, gt) in enumerate(pairs):
        (first if index % 2 else second).update(pred, gt)
    expected = evaluate_arrays(pairs, 3)
    assert_scores_equal(first.merge(second).compute(), expected)
    pred_dir, gt_dir = write_pairs(tmp_path, pairs)
    # the folder order is c0/..., c1/..., c2/...: same images, another order
    assert_scores_equal(evaluate_folders(pred_dir, gt_dir, 3, workers=2), expected)


def test_presence_matching_recovers_a_permutation(tmp_path):
    rng = np.random.default_rng(3)
    num_classes = 6
    permutation = np.concatenate([[0], 1 + rng.permutation(num_classes)])  # gt id -> predicted id
    gt_present = rng.random((40, num_classes + 1)) < 0.3
    gt_present[:, 0] = True
    pred_present = np.zeros_like(gt_present)
    pred_present[:, permutation] = gt_present
    match = match_from_presence(pred_present, gt_present)
    assert match == {int(permutation[c]): c for c in range(num_classes + 1)}
    # from files: an id predicted only on ignore pixels is not present
    gt = np.array([[0, 2, 2, IGNORE]])
    pred_ids, gt_ids = image_presence(np.array([[0, 5, 5, 1]]), gt, num_classes)
    assert np.flatnonzero(pred_ids).tolist() == [0, 5] and np.flatnonzero(gt_ids).tolist() == [0, 2]
    pairs = [(np.array([[permutation[c], 0], [0, permutation[c % num_classes + 1]]]), np.array([[c, 0], [0, IGNORE]]))
             for c in range(1, num_classes + 1)]  # the second predicted id lies on an ignore pixel only
    pred_dir, gt_dir = write_pairs(tmp_path, pairs)
    assert presence_matching(pred_dir, gt_dir, num_classes, workers=1) == match


def test_match_json_roundtrip_and_validation(tmp_path):
    save_match({0: 0, 1: 2, 2: 1}, tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text()) == {"0": 0, "1": 2, "2": 1}
    assert load_match(tmp_path / "m.json", 2) == {0: 0, 1: 2, 2: 1}
    (tmp_path / "bad.json").write_text('{"1": 7}')
    with pytest.raises(ValueError, match="outside the ground-truth ids 0..2"):
        load_match(tmp_path / "bad.json", 2)
    with pytest.raises(ValueError, match="0 must map to 0"):
        ImageNetSEvaluator(2, match={0: 1})
    evaluator = ImageNetSEvaluator(2, match={1: 2, 2: 1})
    with pytest.raises(ValueError, match=r"predicted ids \[3\] are not keys of the match"):
        evaluator.update(np.array([[3, 1]]), np.array([[0, 1]]))


def test_array_errors_name_the_problem():
    evaluator = ImageNetSEvaluator(3)
    with pytest.raises(ValueError, match="no image was evaluated"):
        evaluator.compute()
    with pytest.raises(ValueError, match=r"x.png: the prediction is 2×3 .* ground truth is 3×2"):
        evaluator.update(np.zeros((2, 3), int), np.zeros((3, 2), int), name="x.png")
    with pytest.raises(ValueError, match=r"predicted ids \[7\] are outside 0..3"):
        evaluator.update(np.array([[7, 0]]), np.array([[0, 0]]))
    with pytest.raises(ValueError, match=r"ground-truth ids \[4\] are outside 0..3"):
        evaluator.update(np.array([[0, 0]]), np.array([[4, 0]]))
    with pytest.raises(TypeError, match="integers"):
        evaluator.update(np.zeros((2, 2)), np.zeros((2, 2), int))


@pytest.fixture(scope="module")
def toy_layout(tmp_path_factory):
    """20 toy `objects` images in the ImageNet-S layout; predictions: the ground truth with permuted ids
    (ignore pixels stay 1000, predicted 'no class', so that even the boundaries agree) and a noisy copy."""
    root = tmp_path_factory.mktemp("toy_imagenet_s")
    dataset = ToyWorld("objects", "val", n_images=20, size=64)
    label_paths = write_imagenet_s_layout(dataset, root)
    num_classes = dataset.num_classes - 1
    permutation = np.arange(IGNORE + 1)
    permutation[1:num_classes + 1] = 1 + np.random.default_rng(0).permutation(num_classes)
    gt_dir = root / "validation-segmentation"
    rng = np.random.default_rng(1)
    for path in label_paths:
        gt = read_imagenet_s_png(path)
        relative = path.relative_to(gt_dir)
        write_imagenet_s_png(root / "permuted" / relative, permutation[gt])
        noisy = permutation[gt]
        noise = rng.random(gt.shape) < 0.2
        noisy[noise] = rng.integers(0, num_classes + 1, size=noise.sum())
        write_imagenet_s_png(root / "noisy" / relative, noisy)
    return root, gt_dir, num_classes, permutation


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "course_lib.evaluation.imagenet_s", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_cli_match_then_evaluate_end_to_end(toy_layout, tmp_path):
    root, gt_dir, num_classes, permutation = toy_layout
    common = ["--gt-dir", gt_dir, "--num-classes", num_classes]
    matched = run_cli("match", "--predict-dir", root / "permuted", *common, "--out", tmp_path / "m.json")
    assert matched.returncode == 0, matched.stderr
    match = {int(k): v for k, v in json.loads((tmp_path / "m.json").read_text()).items()}
    assert match == {int(permutation[c]): c for c in range(num_classes + 1)}
    result = run_cli("evaluate", "--predict-dir", root / "permuted", *common, "--match", tmp_path / "m.json",
                     "--json", tmp_path / "scores.json")
    assert result.returncode == 0, result.stderr
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert list(scores) == list(METRIC_KEYS) and "mIoU" in result.stdout
    assert all(value is None or value == pytest.approx(100.0) for value in scores.values())
    assert scores["mIoU"] == pytest.approx(100.0) and scores["b_mIoU"] == pytest.approx(100.0)
    noisy = evaluate_folders(root / "noisy", gt_dir, num_classes, match=match, workers=2)
    assert 20 < noisy["mIoU"] < 95 and noisy["b_mIoU"] < noisy["mIoU"]
    inverse = np.argsort(permutation)  # predicted id -> ground-truth id (1000 -> 1000)
    noisy_pairs = [(inverse[read_imagenet_s_png(root / "noisy" / path.relative_to(gt_dir))], read_imagenet_s_png(path))
                   for path in sorted(gt_dir.glob("*/*.png"))]
    assert_scores_equal(noisy, reference_scores(noisy_pairs, num_classes))
    unmatched = evaluate_folders(root / "permuted", gt_dir, num_classes, workers=1)
    assert unmatched["mIoU"] < 50  # permuted ids without the match score badly


def test_cli_errors_are_clear(toy_layout, tmp_path, capsys):
    root, gt_dir, num_classes, _ = toy_layout
    first = sorted(gt_dir.glob("*/*.png"))[0]
    relative = first.relative_to(gt_dir)

    def error(pred_dir, gt=gt_dir, k=num_classes):
        assert main(["evaluate", "--predict-dir", str(pred_dir), "--gt-dir", str(gt), "--num-classes", str(k),
                     "--workers", "1"]) == 2
        return capsys.readouterr().err

    missing = tmp_path / "missing"
    for path in gt_dir.glob("*/*.png"):
        if path != first:
            write_imagenet_s_png(missing / path.relative_to(gt_dir), read_imagenet_s_png(path))
    message = error(missing)
    assert "1 of 20 predictions are missing" in message and str(missing / relative) in message

    small = tmp_path / "small"
    for path in gt_dir.glob("*/*.png"):
        write_imagenet_s_png(small / path.relative_to(gt_dir), read_imagenet_s_png(path)[:-1])
    message = error(small)
    assert "the prediction is 63×64" in message and "ground truth is 64×64" in message

    wrong_ids = tmp_path / "wrong_ids"
    for path in gt_dir.glob("*/*.png"):
        write_imagenet_s_png(wrong_ids / path.relative_to(gt_dir), np.full((64, 64), 13))
    assert "predicted ids [13] are outside 0..10" in error(wrong_ids)

    grey = tmp_path / "grey"
    for path in gt_dir.glob("*/*.png"):
        (grey / path.relative_to(gt_dir)).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((64, 64), np.uint8)).save(grey / path.relative_to(gt_dir))
    assert "RGB PNGs" in error(grey)

    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no ground-truth labels" in error(missing, gt=empty)

    with pytest.raises(DatasetLayoutError, match="does not exist"):
        evaluate_folders(tmp_path / "nowhere", gt_dir, num_classes)
    with pytest.raises(LabelEncodingError, match="RGB PNGs"):
        presence_matching(grey, gt_dir, num_classes, workers=1)
    failed = run_cli("evaluate", "--predict-dir", missing, "--gt-dir", gt_dir, "--num-classes", num_classes)
    assert failed.returncode == 2 and "predictions are missing" in failed.stderr and "Traceback" not in failed.stderr


def copy_layout(source, target):
    """A copy of a <class>/<name>.png folder (so that a test can damage some of its files)."""
    for path in source.glob("*/*.png"):
        (target / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
        (target / path.relative_to(source)).write_bytes(path.read_bytes())
    return target


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_every_unreadable_file_is_named(toy_layout, tmp_path, capsys):
    root, gt_dir, num_classes, _ = toy_layout
    pred_dir = copy_layout(root / "permuted", tmp_path / "pred")
    files = sorted(pred_dir.glob("*/*.png"))
    damaged = [files[0], files[-1]]  # in different chunks of the process pool
    truncate(damaged[0])
    damaged[1].write_bytes(b"not a png")
    for workers in (1, 2):
        with pytest.raises(LabelEncodingError) as error:
            evaluate_folders(pred_dir, gt_dir, num_classes, workers=workers)
        assert "2 of the 40 label files (20 pairs)" in str(error.value)
        assert all(str(path) in str(error.value) for path in damaged), str(error.value)
    with pytest.raises(LabelEncodingError, match="truncated"):
        presence_matching(pred_dir, gt_dir, num_classes, workers=1)
    assert main(["evaluate", "--predict-dir", str(pred_dir), "--gt-dir", str(gt_dir), "--num-classes",
                 str(num_classes), "--workers", "1"]) == 2
    message = capsys.readouterr().err
    assert all(str(path) in message for path in damaged) and "Traceback" not in message
    with pytest.raises(LabelEncodingError, match=f"{damaged[0]}: cannot be read as a PNG"):
        read_imagenet_s_png(damaged[0])


def test_upper_case_png_files_are_scored_and_counted(tmp_path, capsys):
    pairs = random_pairs(np.random.default_rng(4), 3, num_classes=3)[:3]
    names = ["a/x.png", "a/y.PNG", "b/z.PNG"]
    prediction_names = ["a/x.png", "a/y.png", "b/z.PNG"]  # the suffix's case may differ between the folders
    for (pred, gt), name, prediction_name in zip(pairs, names, prediction_names):
        write_imagenet_s_png(tmp_path / "gt" / name, gt)
        write_imagenet_s_png(tmp_path / "pred" / prediction_name, pred)
    assert_scores_equal(evaluate_folders(tmp_path / "pred", tmp_path / "gt", 3, workers=1), evaluate_arrays(pairs, 3))
    assert main(["evaluate", "--predict-dir", str(tmp_path / "pred"), "--gt-dir", str(tmp_path / "gt"),
                 "--num-classes", "3", "--workers", "1"]) == 0
    assert "scored 3 images" in capsys.readouterr().out
    assert main(["match", "--predict-dir", str(tmp_path / "pred"), "--gt-dir", str(tmp_path / "gt"),
                 "--num-classes", "3", "--workers", "1", "--out", str(tmp_path / "m.json")]) == 0
    assert "over 3 images" in capsys.readouterr().out


@pytest.mark.parametrize("command, flag", [("evaluate", "--json"), ("match", "--out")])
@pytest.mark.parametrize("where", ["folder", "under a file"])
def test_output_paths_are_checked_before_any_image_is_read(toy_layout, tmp_path, capsys, monkeypatch,
                                                           command, flag, where):
    root, gt_dir, num_classes, _ = toy_layout
    reads = []
    monkeypatch.setattr("course_lib.evaluation.imagenet_s.read_imagenet_s_png",
                        lambda *args, **kwargs: reads.append(args) or read_imagenet_s_png(*args, **kwargs))
    (tmp_path / "a_file").write_text("")
    target = tmp_path / "a_folder" if where == "folder" else tmp_path / "a_file" / "out.json"
    (tmp_path / "a_folder").mkdir()
    assert main([command, "--predict-dir", str(root / "permuted"), "--gt-dir", str(gt_dir), "--num-classes",
                 str(num_classes), "--workers", "1", flag, str(target)]) == 2
    message = capsys.readouterr().err
    assert flag in message and str(target) in message and "Traceback" not in message
    assert reads == []  # failed at once, not after scoring every image


@pytest.mark.parametrize("command, flag", [("evaluate", "--json"), ("match", "--out")])
def test_output_files_are_replaced_only_when_complete(toy_layout, tmp_path, capsys, monkeypatch, command, flag):
    root, gt_dir, num_classes, _ = toy_layout
    target = tmp_path / "result.json"
    target.write_text('{"from": "an earlier run"}\n')
    original_write_text = Path.write_text

    def interrupted(self, text, *args, **kwargs):  # the disk fills up half-way through the file
        original_write_text(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", interrupted)
    assert main([command, "--predict-dir", str(root / "permuted"), "--gt-dir", str(gt_dir), "--num-classes",
                 str(num_classes), "--workers", "1", flag, str(target)]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert target.read_text() == '{"from": "an earlier run"}\n'
    assert sorted(path.name for path in tmp_path.iterdir()) == ["result.json"]  # no partial file left behind
