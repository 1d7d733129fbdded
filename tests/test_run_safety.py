"""Issue 20 (points 1, 2, 5) for the training CLIs: every bad value stops before any work with one line on
stderr naming the flag and the value (exit 2, no traceback), ``--out`` is checked at once, a run folder's
``config.json`` is its record (another configuration is refused with the keys that differ, a finished
identical run is reported and left untouched), results are written under a temporary name, and a resumed
STEGO run ends exactly where an uninterrupted one does.

Everything runs in-process through :func:`course_lib.cli.run_cli` (the exit path of ``python -m ...``)."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

from course_lib import cli
from course_lib.config import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def course(empty_course_folders, tmp_path, monkeypatch):
    """Empty cache and data folders, toy profile, no smoke, no debug."""
    monkeypatch.setenv("TQDM_DISABLE", "1")
    for name in ("COURSE_PROFILE", "COURSE_SMOKE", "COURSE_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _stego(argv):
    from course_lib.stego.train import main
    return main(argv)


def _dino(argv):
    from course_lib.ssl.dino import main
    return main(argv)


def _segsort(argv):
    from course_lib.segsort.train import main
    return main(argv)


def _luss(argv):
    from course_lib.luss.pipeline import main
    return main(argv)


def _five_crop(argv):
    spec = importlib.util.spec_from_file_location("five_crop_cli", ROOT / "data_scripts" / "five_crop.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def _lessons(argv):
    from course_lib.lessons import main
    return main(argv)


def exit_of(main, argv, capsys) -> tuple[int, str]:
    """Run ``main`` as ``python -m`` does (through run_cli); its exit status and stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        cli.run_cli(main, argv)
    return stopped.value.code, capsys.readouterr().err


BAD_VALUES = [
    # (CLI, arguments, the flag and the value the message must name)
    (_luss, ["labels", "--tau", "7"], "--tau", "7"),
    (_luss, ["labels", "--set", "tau=1.5"], "--set tau", "1.5"),
    (_segsort, ["--epochs", "-2"], "--epochs", "-2"),
    (_segsort, ["--grayscale", "2"], "--grayscale", "2"),
    (_segsort, ["--optimizer", "adamw"], "--optimizer", "adamw"),
    (_segsort, ["--size", "32"], "--size", "32"),
    (_dino, ["--epochs", "-1"], "--epochs", "-1"),
    (_dino, ["--recolour-p", "1.5"], "--recolour-p", "1.5"),
    (_dino, ["--n-train-images", "8", "--batch-size", "32"], "--n-train-images", "8"),
    (_stego, ["--lr", "-1"], "--lr", "-1"),
    (_stego, ["--n-train", "0"], "--n-train", "0"),
    (_stego, ["--checkpoint-every", "0"], "--checkpoint-every", "0"),
    (_stego, ["--steps", "ten"], "--steps", "ten"),
    (_stego, ["--size", "300"], "--size", "300"),
    (_stego, ["--max-steps", "0"], "--max-steps", "0"),
    (_stego, ["--threads", "-3"], "--threads", "-3"),
    (_five_crop, ["--dataset", "cocostuff27", "--split", "train", "--ratio", "1.5"], "--ratio", "1.5"),
    (_five_crop, ["--dataset", "cocostuff27", "--split", "train", "--jpeg-quality", "500"], "--jpeg-quality", "500"),
    (_lessons, ["run", "99_nope"], "notebook", "99_nope"),
    (_lessons, ["run", "--lessons", "99"], "--lessons", "99"),
]


@pytest.mark.parametrize("main, argv, flag, value", BAD_VALUES,
                         ids=[f"{main.__name__[1:]} {' '.join(argv)}" for main, argv, _, _ in BAD_VALUES])
def test_a_bad_value_stops_at_once_with_one_line_naming_flag_and_value(course, capsys, main, argv, flag, value):
    out = course / "run"
    extra = {_five_crop: ["--data-dir", str(course / "COURSE_DATA")], _lessons: ["--out", str(out)]}.get(main,
                                                                                                        ["--out", str(out)])
    if main is _lessons:
        argv = argv[:1] + extra + argv[1:]
    else:
        argv = argv + extra
    code, err = exit_of(main, argv, capsys)
    assert code == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert flag in err and value in err, err
    assert not out.exists() or not any(out.iterdir())  # nothing written
    assert not (course / "COURSE_DATA" / "cropped").exists()  # five-crop: no empty folder left behind


@pytest.mark.parametrize("kind", ["a file", "a folder under a file"])
def test_stego_out_that_cannot_hold_the_run_fails_before_any_work(course, capsys, monkeypatch, kind):
    import course_lib.stego.train as stego_train

    def no_work(*args, **kwargs):
        raise AssertionError("the backbone was loaded: the --out check came too late")

    monkeypatch.setattr(stego_train, "load_backbone", no_work)
    blocker = course / "blocker"
    blocker.write_text("not a folder\n")
    out = blocker if kind == "a file" else blocker / "run"
    code, err = exit_of(_stego, ["--out", str(out)], capsys)
    assert code == 2 and "Traceback" not in err
    assert "--out" in err and str(out) in err
    assert blocker.read_text() == "not a folder\n"


def test_debug_shows_the_traceback(course, capsys, monkeypatch):
    blocker = course / "blocker"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="--out"):
        cli.run_cli(_stego, ["--out", str(blocker), "--debug"])
    monkeypatch.setenv("COURSE_DEBUG", "1")
    with pytest.raises(ConfigError, match="--out"):
        cli.run_cli(_stego, ["--out", str(blocker)])


# --------------------------------------------------------------------------- the run folder is the record
def test_guard_run_refuses_another_configuration_and_reports_a_finished_one(tmp_path, capsys):
    record = {"stego": {"steps": 400, "lr": 0.002}, "run": {"device": "cpu", "threads": 1}, "out": "a"}
    assert cli.guard_run(tmp_path, record) is None  # a new run
    cli.write_json(tmp_path / "config.json", record)
    assert cli.guard_run(tmp_path, {**record, "run": {"device": "cuda", "threads": 8}, "out": "b"}) is None
    with pytest.raises(ConfigError, match=r"stego\.steps: 400 -> 1.*--overwrite"):
        cli.guard_run(tmp_path, {**record, "stego": {"steps": 1, "lr": 0.002}})
    cli.write_json(tmp_path / "metrics.json", {"mIoU": 30.0, "finished": False})
    assert cli.guard_run(tmp_path, record) is None  # unfinished: resumed
    cli.write_json(tmp_path / "metrics.json", {"mIoU": 30.0})
    assert cli.guard_run(tmp_path, record) == {"mIoU": 30.0}
    assert "already holds this run, finished" in capsys.readouterr().out
    (tmp_path / "checkpoint.pt").write_text("x")
    (tmp_path / "ablations").mkdir()
    assert cli.guard_run(tmp_path, {**record, "stego": {"steps": 1}}, overwrite=True,
                         outputs=("checkpoint.pt", "ablations")) is None
    assert not any(tmp_path.iterdir())


def test_guard_run_refuses_results_nobody_recorded(tmp_path):
    cli.write_json(tmp_path / "metrics.json", {"mIoU": 30.0})
    with pytest.raises(ConfigError, match="no config.json"):
        cli.guard_run(tmp_path, {"steps": 1})


def test_results_are_renamed_into_place_only_when_complete(tmp_path):
    target = tmp_path / "stego.pt"
    cli.save_atomic({"weights": torch.ones(2)}, target)
    with pytest.raises(RuntimeError):
        with cli.replace_when_written(target) as partial:
            partial.write_bytes(b"half a file")
            raise RuntimeError("interrupted")
    assert torch.equal(torch.load(target, weights_only=True)["weights"], torch.ones(2))  # the old file intact
    assert [path.name for path in tmp_path.iterdir()] == ["stego.pt"]  # no partial file left
    with pytest.raises(TypeError):  # not JSON: nothing at all is written
        cli.write_json(tmp_path / "metrics.json", {"bad": object()})
    assert not (tmp_path / "metrics.json").exists() and len(list(tmp_path.iterdir())) == 1


TINY_STEGO = ["--n-train", "8", "--n-val", "4", "--size", "64", "--batch-size", "4", "--code-dim", "8",
              "--no-crf", "--no-ablations", "--device", "cpu", "--threads", "1"]


def test_stego_finished_run_is_never_replaced(course, capsys):
    """The issue's reproduction at tiny size: a finished 3-step run, then the same command with --steps 1
    (refused, keys named, metrics.json untouched), the same command again (reported, nothing retrained),
    then --overwrite (a fresh 1-step run)."""
    out = course / "run"
    args = ["--out", str(out), *TINY_STEGO]
    assert exit_of(_stego, [*args, "--steps", "3"], capsys)[0] == 0
    finished = (out / "metrics.json").read_bytes()
    code, err = exit_of(_stego, [*args, "--steps", "1"], capsys)
    assert code == 2 and "Traceback" not in err and "stego.steps: 3 -> 1" in err and "--overwrite" in err
    assert (out / "metrics.json").read_bytes() == finished
    stamp = (out / "metrics.json").stat().st_mtime_ns
    assert exit_of(_stego, [*args, "--steps", "3"], capsys)[0] == 0
    assert (out / "metrics.json").stat().st_mtime_ns == stamp
    assert exit_of(_stego, [*args, "--steps", "1", "--overwrite"], capsys)[0] == 0
    assert len(json.loads((out / "metrics.json").read_text())["history"]) == 1
    assert not [path.name for path in out.rglob("*partial*")]


def test_stego_checkpoint_of_a_longer_run_is_not_resumed_as_a_shorter_one(tmp_path):
    from course_lib.stego.configs import stego_config
    from course_lib.stego.model import StegoModel
    from course_lib.stego.trainer import CachedPairs, train_stego

    pairs = _tiny_pairs()
    config = stego_config("toy", steps=3, batch_size=4, code_dim=8, attracted_shares=None)
    train_stego(StegoModel(16, 3, config), pairs, tmp_path)
    shorter = stego_config("toy", steps=1, batch_size=4, code_dim=8, attracted_shares=None)
    with pytest.raises(ConfigError, match="trained 3 steps, more than the 1"):
        train_stego(StegoModel(16, 3, shorter), pairs, tmp_path)
    other = stego_config("toy", steps=3, batch_size=4, code_dim=8, attracted_shares=None, lr=1e-2)
    with pytest.raises(ConfigError, match="differs in lr"):
        train_stego(StegoModel(16, 3, other), pairs, tmp_path)
    assert isinstance(pairs, CachedPairs)


def _tiny_pairs():
    from course_lib.stego.trainer import CachedPairs

    generator = torch.Generator().manual_seed(0)
    features = torch.randn(8, 16, 6, 6, generator=generator)
    labels = torch.randint(0, 3, (8, 24, 24), generator=generator)
    table = torch.stack([torch.roll(torch.arange(8), -shift) for shift in range(8)], dim=1)
    return CachedPairs(features, labels, table)


def test_an_interrupted_stego_run_resumes_to_the_uninterrupted_result(tmp_path):
    """Ctrl-C after step 4 of 6 with a checkpoint every 2 steps: the rerun resumes at step 4 and ends with
    exactly the weights and losses of a run that was never interrupted."""
    from course_lib.stego.configs import stego_config
    from course_lib.stego.model import StegoModel
    from course_lib.stego.trainer import train_stego

    pairs = _tiny_pairs()
    config = stego_config("toy", steps=6, batch_size=4, code_dim=8, attracted_shares=None)
    torch.manual_seed(0)
    straight = StegoModel(16, 3, config)
    history = train_stego(straight, pairs, tmp_path / "straight", checkpoint_every=2)

    def interrupt(step, losses):
        if step == 5:
            raise KeyboardInterrupt

    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        train_stego(StegoModel(16, 3, config), pairs, tmp_path / "resumed", checkpoint_every=2, callback=interrupt)
    assert torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)["step"] == 4
    torch.manual_seed(0)
    resumed = StegoModel(16, 3, config)
    assert train_stego(resumed, pairs, tmp_path / "resumed", checkpoint_every=2) == history
    for (name, value), (_, other) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(value, other), name


def test_the_toy_preset_checkpoints_often_enough_to_keep_most_of_an_interrupted_run(course, capsys):
    from course_lib.stego.configs import TOY_CONFIG

    assert cli.run_cli is not None
    with pytest.raises(SystemExit):
        cli.run_cli(_stego, ["--print-config"])
    every = json.loads(capsys.readouterr().out)["run"]["checkpoint_every"]
    assert every <= TOY_CONFIG.steps // 4  # was 500 > 400: an interrupted toy run kept nothing


# --------------------------------------------------------------------------- DINO, SegSort, PASS
def test_dino_resume_with_another_image_count_or_architecture_is_refused(course, capsys, monkeypatch):
    monkeypatch.setenv("COURSE_SMOKE", "1")
    out = course / "run"
    assert exit_of(_dino, ["--out", str(out), "--device", "cpu"], capsys)[0] == 0
    finished = (out / "metrics.json").read_bytes()
    for change, key in ((["--n-train-images", "12"], "dino.n_train_images: 8 -> 12"),
                        (["--no-conv-stem"], "dino.conv_stem: true -> false")):
        code, err = exit_of(_dino, ["--out", str(out), "--device", "cpu", *change], capsys)
        assert code == 2 and key in err and "Traceback" not in err, err
    assert (out / "metrics.json").read_bytes() == finished
    (out / "metrics.json").unlink()  # as if interrupted before the end: the checkpoint alone guards the weights
    (out / "config.json").unlink()
    code, err = exit_of(_dino, ["--out", str(out), "--device", "cpu", "--n-train-images", "12"], capsys)
    assert code == 2 and "n_train_images" in err and "checkpoint.pt" in err


def test_segsort_rerun_with_fewer_epochs_is_refused_not_evaluated(course, capsys):
    out = course / "run"
    tiny = ["--out", str(out), "--n-train", "16", "--n-val", "4", "--size", "64", "--batch-size", "8",
            "--embedding-dim", "8", "--no-eval", "--device", "cpu"]
    assert exit_of(_segsort, [*tiny, "--epochs", "2"], capsys)[0] == 0
    finished = (out / "metrics.json").read_bytes()
    code, err = exit_of(_segsort, [*tiny, "--epochs", "1"], capsys)
    assert code == 2 and "epochs: 2 -> 1" in err and "Traceback" not in err
    assert (out / "metrics.json").read_bytes() == finished
    (out / "config.json").unlink()  # the checkpoint itself refuses to stand for a shorter run
    (out / "metrics.json").unlink()
    code, err = exit_of(_segsort, [*tiny, "--epochs", "1"], capsys)
    assert code == 2 and "trained 2 epochs" in err and "more than the 1 asked for" in err


def test_pass_refuses_changed_training_settings_once_a_step_has_trained(course, capsys, monkeypatch):
    from course_lib.luss.pipeline import check_run_folder

    record = {"dataset": "toy", "smoke": False, "settings": {"tau": "sweep", "pretrain": {"epochs": 40}}}
    cli.write_json(course / "config.json", record)
    changed = {**record, "settings": {"tau": 0.3, "pretrain": {"epochs": 2}}}
    check_run_folder(course, changed)  # nothing trained yet: a note only
    assert "settings changed" in capsys.readouterr().out
    (course / "pretrain").mkdir()
    (course / "pretrain" / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"pretrain checkpoints trained with other settings \(pretrain\.epochs\)"):
        check_run_folder(course, changed)
    check_run_folder(course, {**record, "settings": {"tau": 0.3, "pretrain": {"epochs": 40}}})  # τ: recomputed
    check_run_folder(course, changed, overwrite=True)
    assert not (course / "pretrain").exists() and not (course / "config.json").exists()
