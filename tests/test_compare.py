"""``python -m course_lib.compare``: the label-free 'other' rule, the two protocols, the CRF unaries of hard
ids, the table, and a smoke-sized run of the command (resumed, and guarded against another configuration)."""
import json

import numpy as np
import pytest
import torch

from course_lib import compare
from course_lib.config import ConfigError


def test_border_other_names_every_cluster_on_the_borders_other_and_keeps_the_rest_in_order():
    ids = torch.full((2, 24, 24), 2)  # clusters 2 and 3 share the background, borders included
    ids[:, 12:] = 3
    ids[:, 6:18, 6:18] = 0
    ids[1, 8:12, 8:12] = 1
    named = compare.border_other(ids, 4)
    assert (named[ids >= 2] == 0).all()  # both background clusters → 'other'
    assert (named[ids == 0] == 1).all() and (named[ids == 1] == 2).all()  # the others: 1, 2 in their order


def test_border_other_goes_by_the_share_of_a_cluster_on_the_borders_not_by_its_size():
    ids = torch.zeros(1, 48, 48, dtype=torch.long)  # cluster 0: large, but less on the borders than an even spread
    ids[0, 20:28, :] = 1  # cluster 1: a band across the image, in the borders only at its two ends
    ids[0, :4] = 2  # cluster 2: a thin strip on the top border
    named = compare.border_other(ids, 3)
    assert (named[ids == 2] == 0).all() and (named[ids == 0] == 1).all() and (named[ids == 1] == 2).all()


def _objects_truth() -> torch.Tensor:
    """Three 32-px images: 'other' around one object of category 1, 2 or 3; an ignore (-1) pixel."""
    labels = torch.zeros(3, 32, 32, dtype=torch.long)
    for index in range(3):
        labels[index, 10:22, 10:22] = index + 1
    labels[0, 0, 0] = -1
    return labels


def test_score_objects_is_100_for_a_permuted_perfect_prediction_and_lower_for_a_wrong_one():
    labels = _objects_truth()
    permutation = torch.tensor([3, 0, 2, 1])  # cluster ids are arbitrary, 'other' included
    perfect = permutation[labels.clamp(min=0)]
    scores = compare.score_objects(perfect, labels, 4)
    assert scores["mIoU"] == pytest.approx(100.0) and scores["img_acc"] == pytest.approx(100.0)
    assert set(scores) == set(compare.OBJECT_METRICS)
    merged = perfect.clone()
    merged[labels == 3] = perfect[labels == 2][0]  # categories 2 and 3 in one cluster
    assert compare.score_objects(merged, labels, 4)["mIoU"] < 100.0


def test_score_scenes_hungarian_matches_the_clusters():
    labels = torch.randint(0, 4, (2, 8, 8))
    assert compare.score_scenes((labels + 1) % 4, labels, 4)["mIoU"] == pytest.approx(100.0)


def test_hard_unaries_put_the_confidence_on_the_id_and_sum_to_one():
    ids = torch.tensor([[[0, 2], [1, 2]]])
    unaries = compare.hard_unaries(ids, 3)
    assert unaries.shape == (1, 3, 2, 2)
    assert torch.equal(unaries.argmax(1), ids)
    assert torch.allclose(unaries.exp().sum(1), torch.ones(1, 2, 2))
    assert unaries.exp().max().item() == pytest.approx(compare.HARD_LABEL_CONFIDENCE)


def test_mean_std_and_the_table_put_methods_before_baselines():
    assert compare.mean_std([10.0, 20.0]) == "15.0 ± 7.1"
    assert compare.mean_std([]) == "–"
    record = {"world_version": 2, "n_val": 8, "crf_scale": "scaled", "crf_bilateral_sxy": 20.1,
              "datasets": ["scenes"]}
    cells = {("kmeans", "scenes", 0): {"metrics": {"mIoU": 30.0, "accuracy": 50.0, "mIoU_crf": 31.0,
                                                    "accuracy_crf": 51.0}}}
    rows = compare.build_rows(cells, ["kmeans", "stego", "pass"], ["scenes"], [0], record)
    assert [row["method"] for row in rows] == ["kmeans", "stego", "pass"]
    assert rows[0]["metrics"]["mIoU"] == [30.0] and rows[1]["metrics"] == {} and rows[1]["seeds"] == []
    assert "no single foreground object" in rows[2]["notes"]
    text = compare.markdown(rows, record)
    assert text.index("| stego |") < text.index("**baselines**") < text.index("| kmeans |")


SMOKE = ["--profile", "toy", "--n-train", "16", "--n-val", "4", "--world-version", "2",
         "--methods", "stego", "kmeans", "texture", "pass", "--threads", "1"]


def test_command_scores_every_cell_resumes_and_refuses_another_configuration(tmp_path, empty_course_folders,
                                                                             monkeypatch, one_thread, capsys):
    monkeypatch.setenv("COURSE_SMOKE", "1")
    out = tmp_path / "cmp"
    rows = compare.main([*SMOKE, "--seeds", "0", "--out", str(out)])
    saved = json.loads((out / "comparison.json").read_text())
    assert saved == json.loads(json.dumps(rows))
    by_key = {(row["method"], row["dataset"]): row for row in saved}
    references = ("constant", "k-means RGB", f"noisy oracle {compare.REFERENCE_NOISE}")
    assert set(by_key) == {(m, d) for m in ("stego", "kmeans", "texture", "pass", *references) for d in compare.DATASETS}
    assert by_key["noisy oracle 0.2", "scenes"]["metrics"]["mIoU"][0] > 2 * by_key["k-means RGB", "scenes"][
        "metrics"]["mIoU"][0]  # the ceiling and the colour bar
    assert by_key["constant", "objects"]["metrics"]["f_measure"] == [0.0]  # all 'other': no foreground
    text = (out / "comparison.md").read_text()
    assert text.index("| pass |") < text.index("**baselines**") < text.index("**reference points**") \
        < text.index("| noisy oracle 0.2 |")
    stego = by_key["stego", "objects"]
    assert stego["seeds"] == [0] and set(stego["metrics"]) == {
        *compare.OBJECT_METRICS, *(f"{name}_crf" for name in compare.OBJECT_METRICS)}
    assert set(by_key["kmeans", "scenes"]["metrics"]) == {"mIoU", "accuracy", "mIoU_crf", "accuracy_crf"}
    assert by_key["pass", "scenes"]["metrics"] == {} and by_key["pass", "scenes"]["notes"] == compare.SCENES_PASS
    assert set(by_key["pass", "objects"]["metrics"]) == {
        f"{prefix}{name}" for prefix in (*compare.PASS_OUTPUTS, compare.NO_ATTENTION_BORDER)
        for name in compare.OBJECT_METRICS}
    assert compare.cell_path(out, "pass", "objects", 0).is_file()
    assert all(0.0 <= value <= 100.0 for row in saved for values in row["metrics"].values() for value in values)
    assert "## objects" in (out / "comparison.md").read_text()

    cell = compare.cell_path(out, "texture", "scenes", 0)
    first = cell.read_text()
    cell.write_text(first.replace('"seconds"', '"marker": 1, "seconds"'))  # a reloaded cell is not recomputed
    capsys.readouterr()
    compare.main([*SMOKE, "--seeds", "0", "1", "--methods", "texture", "--datasets", "scenes", "--out", str(out)])
    assert "marker" in cell.read_text()
    assert compare.cell_path(out, "texture", "scenes", 1).is_file()
    rows = json.loads((out / "comparison.json").read_text())
    assert rows[0]["seeds"] == [0, 1] and len(rows[0]["metrics"]["mIoU"]) == 2

    with pytest.raises(ConfigError, match="crf_scale"):
        compare.main([*SMOKE, "--seeds", "0", "--crf-scale", "stego", "--out", str(out)])


def test_print_config_resolves_the_crf_width_and_refuses_the_full_profile(tmp_path, capsys):
    compare.main(["--profile", "toy", "--crf-scale", "stego", "--print-config", "--out", str(tmp_path / "x")])
    record = json.loads(capsys.readouterr().out)
    assert record["crf_bilateral_sxy"] == pytest.approx(67.0) and record["seeds"] == [0, 1, 2]
    assert not (tmp_path / "x").exists()
    compare.main(["--profile", "toy", "--print-config", "--out", str(tmp_path / "x")])
    assert json.loads(capsys.readouterr().out)["crf_bilateral_sxy"] == pytest.approx(67.0 * 96 / 320)
    with pytest.raises(ConfigError, match="--n-train 8 does not fill one STEGO batch of 16"):
        compare.main(["--profile", "toy", "--n-train", "8", "--print-config", "--out", str(tmp_path / "x")])
    with pytest.raises(ConfigError, match="--profile full"):
        compare.main(["--profile", "full", "--print-config", "--out", str(tmp_path / "x")])


def test_segsort_runs_on_both_datasets_of_world_2_with_crf_and_its_knn_rows_marked(tmp_path, empty_course_folders,
                                                                                     monkeypatch, one_thread):
    monkeypatch.setenv("COURSE_SMOKE", "1")
    rows = compare.main(["--profile", "toy", "--n-train", "16", "--n-val", "4", "--methods", "segsort", "--seeds", "0",
                         "--threads", "1", "--world-version", "2", "--out", str(tmp_path / "v2")])
    by_dataset = {row["dataset"]: row for row in rows if row["method"] == "segsort"}
    assert set(by_dataset["scenes"]["metrics"]) == {"mIoU", "accuracy", "mIoU_crf", "accuracy_crf", "knn_mIoU",
                                                    "knn_accuracy"}
    objects = by_dataset["objects"]["metrics"]
    assert {"mIoU", "f_measure_crf", "knn_mIoU", "knn_f_measure"} <= set(objects)
    for row in by_dataset.values():
        assert row["seeds"] == [0] and "uses the training labels" in row["notes"] and "CRF:" in row["notes"]
        assert all(0 <= values[0] <= 100 for values in row["metrics"].values())
    assert "border rule" in by_dataset["objects"]["notes"] and "border rule" not in by_dataset["scenes"]["notes"]
    assert "knn_mIoU" in (tmp_path / "v2" / "comparison.md").read_text()
    state = torch.load(tmp_path / "v2" / "runs" / "segsort_objects_seed0" / "checkpoint.pt", weights_only=True)
    assert (state["config"]["world_kind"], state["config"]["world_version"]) == ("objects", 2)


def test_score_classes_takes_knn_class_ids_as_they_are():
    labels = _objects_truth()
    assert compare.score_classes(labels.clamp(min=0), labels, "objects", 4)["mIoU"] == pytest.approx(100)
    truth = labels.clamp(min=0)
    swapped = torch.where(truth == 1, 2, torch.where(truth == 2, 1, truth))  # matching would undo it; identity not
    assert compare.score_classes(swapped, labels, "objects", 4)["mIoU"] == pytest.approx(50)  # 'other' and 3 right
    assert compare.score_classes(swapped, labels, "scenes", 4)["mIoU"] < compare.score_scenes(swapped, labels, 4)["mIoU"]


def test_unavailable_names_the_cells_that_do_not_run():
    assert compare.unavailable("pass", "scenes") == compare.SCENES_PASS
    assert compare.unavailable("pass", "objects") is None
    assert compare.unavailable("segsort", "scenes") is None and compare.unavailable("segsort", "objects") is None
    assert compare.unavailable("stego", "objects") is None


def test_ablations_retrain_one_ingredient_each_with_the_full_methods_shifts(tmp_path, empty_course_folders,
                                                                            monkeypatch, one_thread):
    monkeypatch.setenv("COURSE_SMOKE", "1")
    out = tmp_path / "abl"
    compare.main(["--profile", "toy", "--n-train", "16", "--n-val", "4", "--size", "64", "--methods", "stego",
                  "--datasets", "scenes", "--seeds", "0", "--threads", "1", "--ablations", "--out", str(out)])
    rows = json.loads((out / "ablations.json").read_text())
    assert [row["variant"] for row in rows] == ["STEGO", *compare.STEGO_ABLATIONS]
    assert all(set(row["metrics"]) == {"mIoU", "accuracy", "mIoU_crf", "accuracy_crf"} for row in rows)
    full = json.loads((out / "runs" / "stego_scenes_seed0" / "result.json").read_text())["config"]
    for variant, change in compare.STEGO_ABLATIONS.items():
        slug = compare.ablation_slug(variant)
        config = json.loads((out / "runs" / f"stego~{slug}_scenes_seed0" / "result.json").read_text())["config"]
        assert {key: config[key] for key in change} == change  # the one ingredient changed...
        shifts = [config[b] for b in ("b_self", "b_knn", "b_rand")]
        assert (shifts != [full[b] for b in ("b_self", "b_knn", "b_rand")]) == (variant == compare.RECENTRED)
        different = {key for key in full if full[key] != config[key]} - set(change) - {"attracted_shares"}
        assert not different - ({"b_self", "b_knn", "b_rand"} if variant == compare.RECENTRED else set()), different
    assert "no kNN term" in (out / "ablations.md").read_text()
    shares = {row["variant"]: row["attracted_shares"] for row in rows}
    assert shares["STEGO"] == pytest.approx({"self": 0.2, "knn": 0.1, "rand": 0.02}, abs=0.02)  # b calibrated so
    assert shares["no spatial centering"] != shares["STEGO"]  # same b, uncentred F: other shares attracted
    assert shares["no 0-clamp"] == shares["STEGO"]  # the clamp acts on the codes, not on F
    assert shares[compare.RECENTRED] == pytest.approx(shares["STEGO"], abs=0.02)  # b recalibrated for uncentred F
    precision = {row["variant"]: row.get("attraction_precision") for row in rows}
    assert set(precision["STEGO"]) == {"self", "knn", "rand"} and precision["no kNN term"] is None
    assert all(0 <= value <= 1 for value in [*precision["STEGO"].values(), *precision[compare.RECENTRED].values()])


def test_native_five_crop_cuts_half_side_crops_of_a_double_size_render_without_resizing(empty_course_folders):
    from course_lib.data.toyworld import ToyWorld
    from course_lib.stego.data import FiveCrops

    big, small = ToyWorld("scenes", "train", n_images=1, size=128), ToyWorld("scenes", "train", n_images=1, size=64)
    crops = FiveCrops(big, size=64)
    assert len(crops) == 5 and crops[0]["image"].shape == small[0]["image"].shape
    assert torch.equal(crops[0]["image"], big[0]["image"][:, :64, :64])  # top-left crop, pixels untouched
    assert torch.equal(crops[3]["label"], big[0]["label"][64:, 64:])
    assert FiveCrops(small)[0]["image"].shape == small[0]["image"].shape  # default: back to the image size


def test_the_no_attention_baseline_gets_the_border_rule_for_other(tmp_path):
    from course_lib.data.label_png import write_imagenet_s_png

    truth = _objects_truth()
    for index, label in enumerate(truth):
        clusters = np.where(label.numpy() > 0, min(index + 2, 3), 1)  # background: cluster 1; objects: 2, 3, 3
        for folder, ids in (("gt", np.where(label.numpy() < 0, 1000, label.numpy())), ("pred", clusters)):
            write_imagenet_s_png(tmp_path / folder / "c" / f"{index}.png", ids)
    scores = compare.border_rule_scores(tmp_path / "pred", tmp_path / "gt", 3)
    assert scores["mIoU"] == pytest.approx((100 + 100 + 50 + 0) / 4)  # 'other', 1 right; cluster 3 takes 2 or 3
    assert scores["f_measure"] > 0  # 'other' exists: PASS's bare baseline has none


def _row(method, dataset, **metrics):
    return {"method": method, "dataset": dataset, "protocol": compare.PROTOCOLS[dataset], "seeds": [0, 1],
            "metrics": metrics, "notes": ""}


def test_lesson_table_puts_methods_first_and_label_using_protocols_on_lines_of_their_own():
    rows = [_row("constant", "scenes", mIoU=[1.0]), _row("kmeans", "scenes", mIoU=[30.0, 32.0]),
            _row("segsort", "scenes", mIoU=[10.0, 12.0], knn_mIoU=[33.0, 35.0]), _row("stego", "scenes", mIoU=[20.0, 24.0]),
            _row("pass", "scenes"), _row("stego", "objects", mIoU=[5.0, 5.0])]
    table = compare.lesson_table(rows, "scenes")
    assert list(table.index) == ["segsort", compare.LABEL_USING["segsort"][1], "stego", "kmeans", "constant"]
    assert list(table["block"]) == ["method", "method", "method", "baseline", "reference"]
    assert table.loc["stego", "mIoU"] == "22.0 ± 2.8" and table.loc["stego", "mIoU_crf"] == "–"
    assert table.loc[compare.LABEL_USING["segsort"][1], "mIoU"] == "34.0 ± 1.4"


def test_metric_bars_draw_one_bar_per_row_and_variant():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from course_lib.viz.comparison import plot_metric_bars

    rows = [_row("stego", "scenes", mIoU=[20.0, 24.0], mIoU_crf=[25.0, 27.0]), _row("kmeans", "scenes", mIoU=[30.0, 32.0]),
            _row("pass", "scenes")]
    fig, ax = plt.subplots()
    plot_metric_bars(rows, "scenes", ax)
    assert sorted(round(bar.get_width(), 6) for bar in ax.patches) == [22.0, 26.0, 31.0]
    assert [label.get_text() for label in ax.get_yticklabels()] == ["stego", "kmeans"]
    plt.close(fig)


def test_attraction_precision_is_high_when_features_encode_the_class_and_near_chance_when_not():
    from course_lib.models.features import FeatureSet

    generator = torch.Generator().manual_seed(0)
    labels = torch.zeros(40, 32, 32, dtype=torch.long)
    labels[:, :, 16:] = 1 + torch.arange(40)[:, None, None] % 3  # left half class 0, right half class 1..3
    patches = labels[:, ::8, ::8]  # 4×4 patches of 8 px
    encoded = torch.nn.functional.one_hot(patches, 4).permute(0, 3, 1, 2).float()
    for features, low, high in ((encoded + 0.05 * torch.randn(encoded.shape, generator=generator), 0.9, 1.0),
                                (torch.randn(encoded.shape, generator=generator), 0.0, 0.5)):  # chance: about 1/3
        split = compare.Split(None, FeatureSet(features, labels, None), None, None, labels)
        precision = compare.attraction_precision(split, pointwise=False)
        assert low <= precision["rand"] <= high, precision  # pairs of patches from two different images


def test_the_design_command_reproduces_the_shipped_tables_configuration(tmp_path, capsys):
    compare.main(["--profile", "toy", "--seeds", "0", "1", "2", "--print-config", "--out", str(tmp_path / "x")])
    record = json.loads(capsys.readouterr().out)
    shipped = {row["notes"] for row in compare.shipped() if row["method"] == "stego"}
    assert record["world_version"] == 2 and record["crf_scale"] == "scaled" and record["seeds"] == [0, 1, 2]
    assert all(f"θα = {record['crf_bilateral_sxy']:.1f} px" in note for note in shipped)
