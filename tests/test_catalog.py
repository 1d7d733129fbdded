from course_lib.data.catalog import DATASETS, dataset_table


def test_dataset_table_reports_presence_and_commands(tmp_path):
    (tmp_path / "cityscapes").mkdir()
    rows = dataset_table(tmp_path)
    assert [row["dataset"] for row in rows] == [info.name for info in DATASETS]
    on_disk = {row["dataset"]: row["on disk"] for row in rows}
    assert on_disk["Cityscapes-27"] == "yes" and on_disk["CocoStuff-27"] == "no"
    commands = {row["dataset"]: row["fetch with"] for row in rows}
    assert commands["ImageNet-S300"].endswith("--subset 300")
    assert commands["CocoStuff-27"] == "python data_scripts/get_cocostuff.py"
