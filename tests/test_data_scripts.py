"""Tests of the registry (course_lib.data.hub), the dataset preparation (course_lib.data.prepare) and
the data_scripts command lines, against a local HTTP server and small fake datasets."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_download import FileServer, zip_bytes  # noqa: E402  (the local HTTP server of the download tests)

from course_lib.data import hub  # noqa: E402
from course_lib.data.download import part_path  # noqa: E402
from course_lib.data.prepare import (DatasetLayoutError, ListMismatchWarning, build_imagenet_s,  # noqa: E402
                                     check_cocostuff, fetch_imagenet_s_lists, install_imagenet_s_annotations,
                                     prepare_cocostuff, prepare_voc, prepare_weights)
from course_lib.models.backbones import weights_architecture  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::course_lib.data.download.UnverifiedDownloadWarning")

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "data_scripts"
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "imagenet_s"


@pytest.fixture
def server():
    instance = FileServer()
    yield instance
    instance.close()


def run_data_script(name: str, *args: str, mirror: str | None = None, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TQDM_DISABLE": "1", "COURSE_DATA": str(tmp_path / "data"),
           "COURSE_CACHE": str(tmp_path / "cache")}
    env.pop(hub.MIRROR_VARIABLE, None)
    if mirror:
        env[hub.MIRROR_VARIABLE] = mirror
    return subprocess.run([sys.executable, str(SCRIPTS / name), *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)


def jpeg_bytes(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def png_bytes(value: int, mode: str = "L") -> bytes:
    shape = (6, 6) if mode == "L" else (6, 6, 3)
    buffer = io.BytesIO()
    Image.fromarray(np.full(shape, value, dtype=np.uint8), mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def tar_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ----------------------------------------------------------------------------------------- registry

def test_every_registry_entry_has_https_or_an_explicit_flag_and_a_checksum_or_an_explicit_flag():
    entries = hub.all_files()
    assert len(entries) == 4 + 4 + 3 + 5 + 2 + 15 + 3
    filenames = [e.filename for e in entries.values()]
    assert len(set(filenames)) == len(filenames), "file names must be unique (mirrors serve them by name)"
    for entry in entries.values():
        if entry.http_only:
            assert entry.url.startswith("http://"), entry.name
        else:
            assert entry.url.startswith("https://"), entry.name
        assert entry.checksum_known == (entry.sha256 is not None or entry.md5 is not None), entry.name
        assert entry.checksum_source, entry.name
        if entry.sha256 is not None and len(entry.sha256) < 64:   # a published prefix, said so
            assert re.fullmatch(r"[0-9a-f]{8,63}", entry.sha256) and "prefix" in entry.checksum_source, entry.name
        elif entry.sha256 is not None:
            assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256), entry.name
        if entry.md5 is not None:
            assert re.fullmatch(r"[0-9a-f]{32}", entry.md5), entry.name
    with pytest.raises(ValueError, match="checksum_known"):
        hub.RemoteFile(name="x", url="https://example.org/x", filename="x", checksum_known=True)


def test_imagenet_s_lists_pin_the_commit_their_checksums_belong_to():
    for key, entry in hub.IMAGENET_S_LISTS.items():
        assert entry.url == (f"https://raw.githubusercontent.com/LUSSeg/ImageNet-S/{hub.IMAGENET_S_COMMIT}"
                             f"/data/{key}")
        assert entry.sha256 is not None and entry.size is not None
    for subset in hub.IMAGENET_S_SUBSETS:
        assert set(hub.imagenet_s_list_names(subset).values()) <= set(hub.IMAGENET_S_LISTS)


def test_imagenet_s_list_checksums_match_the_reference_files():
    if not REFERENCE.is_dir():
        pytest.skip("the reference copy of the official lists (../shared/reference) is not available")
    for key, entry in hub.IMAGENET_S_LISTS.items():
        data = (REFERENCE / key).read_bytes()
        assert len(data) == entry.size, key
        assert hashlib.sha256(data).hexdigest() == entry.sha256, key


def test_mirror_replaces_the_url_by_file_name(monkeypatch):
    entry = hub.WEIGHTS["dino_vits8"]
    monkeypatch.delenv(hub.MIRROR_VARIABLE, raising=False)
    assert entry.resolved_url() == "https://dl.fbaipublicfiles.com/dino/dino_deitsmall8_pretrain/dino_deitsmall8_pretrain.pth"
    monkeypatch.setenv(hub.MIRROR_VARIABLE, "http://127.0.0.1:9/files/")
    assert entry.resolved_url() == "http://127.0.0.1:9/files/dino_deitsmall8_pretrain.pth"
    assert entry.resolved_url("https://m.example") == "https://m.example/dino_deitsmall8_pretrain.pth"


# ------------------------------------------------------------------------------------------ weights

def official_weights_bytes(model: str) -> bytes:
    """A state dict of ``model``'s official architecture in a few kB (every tensor a broadcast view of one zero):
    what get_weights.py accepts, without the real file's size."""
    state = {key: torch.zeros(()).expand(value.shape)
             for key, value in weights_architecture(model).state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def test_get_weights_end_to_end_through_a_mirror(server, tmp_path):
    payload = official_weights_bytes("dino_vits16")
    server.files["dino_deitsmall16_pretrain.pth"] = payload
    out = tmp_path / "weights"
    result = run_data_script("get_weights.py", "--model", "dino_vits16", "--out-dir", str(out),
                        mirror=server.base_url, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (out / "dino_deitsmall16_pretrain.pth").read_bytes() == payload
    assert hashlib.sha256(payload).hexdigest() in result.stderr  # trust on first use: the value is shown
    record = out / "dino_deitsmall16_pretrain.pth.sha256"                # ... and recorded
    assert record.read_text() == f"{hashlib.sha256(payload).hexdigest()}  dino_deitsmall16_pretrain.pth\n"
    assert "dino_vits16" in result.stdout and "loads as the state dict of DINO ViT-S/16" in result.stdout

    again = run_data_script("get_weights.py", "--model", "dino_vits16", "--out-dir", str(out),
                       mirror=server.base_url, tmp_path=tmp_path)
    assert again.returncode == 0 and "already present" in again.stdout
    assert "matches the one recorded when it was downloaded" in again.stdout
    assert len(server.requests_for("dino_deitsmall16_pretrain.pth")) == 1


def test_torchvision_resnets_are_registered_with_the_hash_prefix_of_their_official_names():
    for model, stem in [("resnet18", "resnet18-f37072fd"), ("resnet50", "resnet50-0676ba61"),
                        ("resnet101", "resnet101-63fe2227")]:
        entry = hub.WEIGHTS[model]
        assert entry.url == f"https://download.pytorch.org/models/{stem}.pth" and entry.filename == f"{stem}.pth"
        # torch.hub.HASH_REGEX: the digits after the last '-' are the SHA-256 prefix torchvision checks
        assert entry.sha256 == stem.rsplit("-", 1)[1] and entry.checksum_known


def test_prepare_weights_checks_the_resnet_hash_prefix(server, tmp_path):
    payload = official_weights_bytes("resnet18")
    server.files["resnet18-f37072fd.pth"] = payload
    prefixed = dataclasses.replace(hub.WEIGHTS["resnet18"], sha256=hashlib.sha256(payload).hexdigest()[:8])
    paths = prepare_weights(["resnet18"], tmp_path / "weights", files={"resnet18": prefixed},
                            mirror=server.base_url, progress=False)
    assert paths["resnet18"] == tmp_path / "weights" / "resnet18-f37072fd.pth"
    assert paths["resnet18"].read_bytes() == payload


def test_get_weights_rejects_a_resnet_file_whose_sha256_lacks_the_official_prefix(server, tmp_path):
    server.files["resnet101-63fe2227.pth"] = b"not the ImageNet weights" * 100
    failed = run_data_script("get_weights.py", "--model", "resnet101", mirror=server.base_url, tmp_path=tmp_path)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert "Checksum mismatch" in failed.stderr and "sha256 starting with 63fe2227" in failed.stderr
    target = tmp_path / "cache" / "weights" / "resnet101-63fe2227.pth"
    assert not target.exists() and not part_path(target).exists()


def test_get_weights_defaults_to_the_cache_and_reports_http_errors(server, tmp_path):
    server.files["dino_vitbase8_pretrain.pth"] = payload = official_weights_bytes("dino_vitb8")
    ok = run_data_script("get_weights.py", "--model", "dino_vitb8", mirror=server.base_url, tmp_path=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "cache" / "weights" / "dino_vitbase8_pretrain.pth").read_bytes() == payload

    failed = run_data_script("get_weights.py", "--model", "dino_vits8", mirror=server.base_url, tmp_path=tmp_path)
    assert failed.returncode == 1
    assert "HTTP 404" in failed.stderr and "Traceback" not in failed.stderr


# ---------------------------------------------------------------------------------------- Cityscapes

def test_get_cityscapes_without_zips_prints_instructions_and_fails(tmp_path):
    for args in ([], ["--from-dir", str(tmp_path)]):
        result = run_data_script("get_cityscapes.py", *args, tmp_path=tmp_path)
        assert result.returncode != 0
        for needle in ("https://www.cityscapes-dataset.com", "leftImg8bit_trainvaltest.zip",
                       "gtFine_trainvaltest.zip", "--from-dir"):
            assert needle in result.stderr
    assert not (tmp_path / "data" / "cityscapes").exists()


def test_get_cityscapes_extracts_the_users_zips(tmp_path):
    images, labels = {}, {}
    for split, city, n in (("train", "aachen", 2), ("val", "lindau", 1), ("test", "berlin", 1)):
        for k in range(n):
            stem = f"{city}_{k:06d}_000019"
            images[f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png"] = png_bytes(k, "RGB")
            labels[f"gtFine/{split}/{city}/{stem}_gtFine_labelIds.png"] = png_bytes(7)
    downloads = tmp_path / "downloads"
    write(downloads / "leftImg8bit_trainvaltest.zip", zip_bytes({**images, "license.txt": b"terms"}))
    write(downloads / "gtFine_trainvaltest.zip", zip_bytes(labels))
    result = run_data_script("get_cityscapes.py", "--from-dir", str(downloads), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    root = tmp_path / "data" / "cityscapes"
    assert (root / "gtFine/train/aachen/aachen_000001_000019_gtFine_labelIds.png").is_file()
    assert re.search(r"train\s+2", result.stdout) and re.search(r"val\s+1", result.stdout)
    assert (downloads / "gtFine_trainvaltest.zip").is_file()  # the user's download is kept


# ---------------------------------------------------------------------------------------- CocoStuff

def cocostuff_members(prefix: str, drop_label: str | None = None) -> dict[str, bytes]:
    members = {}
    for split, ids in (("train2017", ["000000000009", "000000000025"]), ("val2017", ["000000000139"])):
        members[f"{prefix}curated/{split}/Coco164kFull_Stuff_Coarse_7.txt"] = "".join(f"{i}\n" for i in ids).encode()
        if split == "train2017":  # STEGO's training list (its crop_datasets.py), shipped with the curated lists
            members[f"{prefix}curated/{split}/Coco164kFull_Stuff_Coarse.txt"] = "".join(f"{i}\n" for i in ids).encode()
        for i in ids:
            members[f"{prefix}images/{split}/{i}.jpg"] = jpeg_bytes(int(i))
            if i != drop_label:
                members[f"{prefix}annotations/{split}/{i}.png"] = png_bytes(int(i) % 182)
    return members


def test_prepare_cocostuff_from_the_stego_archive(server, tmp_path):
    server.files["cocostuff.zip"] = zip_bytes(cocostuff_members("cocostuff/"))
    data = tmp_path / "data"
    counts = prepare_cocostuff(data, "stego", mirror=server.base_url, progress=False)
    assert counts == {"train2017": 2, "val2017": 1, "train2017_stego": 2}
    assert (data / "cocostuff" / "annotations" / "val2017" / "000000000139.png").is_file()
    assert not (data / "downloads" / "cocostuff.zip").exists()  # deleted once extracted
    assert not (data / "downloads" / "cocostuff.zip.staging").exists()
    assert prepare_cocostuff(data, "stego", mirror=server.base_url, progress=False) == counts
    assert len(server.requests_for("cocostuff.zip")) == 1  # the second run found everything in place


def test_prepare_cocostuff_from_the_official_archives(server, tmp_path):
    members = cocostuff_members("")
    for name, prefix, parent in (("train2017.zip", "images/train2017/", "images/"),
                                 ("val2017.zip", "images/val2017/", "images/"),
                                 ("stuffthingmaps_trainval2017.zip", "annotations/", "annotations/")):
        server.files[name] = zip_bytes({k[len(parent):]: v for k, v in members.items() if k.startswith(prefix)})
    server.files["COCOStuff164kCurated.tar.gz"] = tar_bytes(
        {f"COCO/CocoStuff164k/{k}": v for k, v in members.items() if k.startswith("curated/")})
    files = {name: dataclasses.replace(entry, md5=hashlib.md5(server.files[entry.filename]).hexdigest())
             for name, entry in hub.COCOSTUFF.items() if entry.md5 is not None}
    counts = prepare_cocostuff(tmp_path / "data", "official", files=files, mirror=server.base_url,
                               keep_archives=True, progress=False)
    assert counts == {"train2017": 2, "val2017": 1, "train2017_stego": 2}
    assert (tmp_path / "data" / "downloads" / "train2017.zip").is_file()  # --keep-archives


def test_check_cocostuff_names_the_missing_files(server, tmp_path):
    server.files["cocostuff.zip"] = zip_bytes(cocostuff_members("", drop_label="000000000025"))
    with pytest.raises(DatasetLayoutError, match=r"1 of 2 images or labels of Coco164kFull_Stuff_Coarse_7.txt are missing .*train2017/000000000025"):
        prepare_cocostuff(tmp_path / "data", "stego", mirror=server.base_url, progress=False)
    with pytest.raises(DatasetLayoutError, match="get_cocostuff.py"):
        check_cocostuff(tmp_path / "nowhere")


def test_check_cocostuff_requires_stegos_training_list(server, tmp_path):
    members = {k: v for k, v in cocostuff_members("").items() if not k.endswith("Coco164kFull_Stuff_Coarse.txt")}
    server.files["cocostuff.zip"] = zip_bytes(members)
    with pytest.raises(DatasetLayoutError, match="Coco164kFull_Stuff_Coarse.txt"):
        prepare_cocostuff(tmp_path / "data", "stego", mirror=server.base_url, progress=False)


def test_an_existing_folder_that_the_scripts_did_not_install_is_never_overwritten(server, tmp_path):
    server.files["cocostuff.zip"] = zip_bytes(cocostuff_members("cocostuff/"))
    own = write(tmp_path / "data" / "cocostuff" / "images" / "train2017" / "mine.jpg", b"user data")
    with pytest.raises(DatasetLayoutError, match="already exists .* move it away"):
        prepare_cocostuff(tmp_path / "data", "stego", mirror=server.base_url, progress=False)
    assert own.read_bytes() == b"user data"
    assert server.requests_for("cocostuff.zip") == []


# --------------------------------------------------------------------------------------- PASCAL VOC

def test_prepare_voc_builds_train_aug_from_the_augmented_labels(server, tmp_path):
    train, val, sbd_only = ["2007_000032", "2007_000039"], ["2007_000033"], ["2008_000002", "2008_000003"]
    voc = {"VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt": "".join(f"{i}\n" for i in train).encode(),
           "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt": "".join(f"{i}\n" for i in val).encode()}
    for k, i in enumerate(train + val + sbd_only):
        voc[f"VOCdevkit/VOC2012/JPEGImages/{i}.jpg"] = jpeg_bytes(k)
    for i in train + val:
        voc[f"VOCdevkit/VOC2012/SegmentationClass/{i}.png"] = png_bytes(1)
    server.files["VOCtrainval_11-May-2012.tar"] = tar_bytes(voc)
    server.files["SegmentationClassAug.zip"] = zip_bytes(
        {**{f"SegmentationClassAug/{i}.png": png_bytes(2) for i in train + val + sbd_only},
         "__MACOSX/SegmentationClassAug/._2007_000032.png": b"resource fork"})
    tar_md5 = hashlib.md5(server.files["VOCtrainval_11-May-2012.tar"]).hexdigest()
    files = {"voc2012_trainval": dataclasses.replace(hub.VOC["voc2012_trainval"], md5=tar_md5)}
    counts = prepare_voc(tmp_path / "data", files=files, mirror=server.base_url, progress=False)
    assert counts == {"train_aug": 4, "train": 2, "val": 1}
    voc_root = tmp_path / "data" / "VOCdevkit" / "VOC2012"
    assert (voc_root / "ImageSets/Segmentation/train_aug.txt").read_text().split() == sorted(train + sbd_only)
    assert not (tmp_path / "data" / "__MACOSX").exists()

    server.files["VOCtrainval_11-May-2012.tar"] = b"a different file"
    with pytest.raises(Exception, match="Checksum mismatch"):
        prepare_voc(tmp_path / "other", files=files, mirror=server.base_url, progress=False)
    assert not part_path(tmp_path / "other" / "downloads" / "VOCtrainval_11-May-2012.tar").exists()


# --------------------------------------------------------------------------------------- ImageNet-S

def _slice_lists(source: dict[str, list[str]], n_classes: int) -> dict[str, list[str]]:
    """A small but real slice of the official im50 lists: the first classes, a few lines each."""
    categories = source["categories"][:n_classes]

    def first_lines(lines, column, per_class):
        kept, seen = [], {}
        for line in lines:
            wnid = line.split()[column].split("/")[0]
            if wnid in categories and seen.get(wnid, 0) < per_class:
                kept.append(line)
                seen[wnid] = seen.get(wnid, 0) + 1
        return kept

    mapping_validation = first_lines(source["mapping_validation"], 1, 3)
    crossing = [line for line in source["mapping_validation"]
                if line.split()[1].split("/")[0] in categories and line.split()[0].split("/")[0] != line.split()[1].split("/")[0]]
    mapping_validation += [line for line in crossing[:1] if line not in mapping_validation]
    kept_images = {line.split()[1] for line in mapping_validation}
    return {
        "categories": categories,
        "mapping_validation": mapping_validation,
        "mapping_test": first_lines(source["mapping_test"], 1, 2),
        "names_validation": [line for line in source["names_validation"] if line.split()[0] in kept_images],
        "names_train_semi": first_lines(source["names_train_semi"], 0, 2),
    }


def _fake_lists() -> dict[str, list[str]]:
    """Lists with the official structure, including a validation image filed under another class."""
    a, b = "n01443537", "n01491361"
    return {
        "categories": [a, b],
        "mapping_validation": [f"{a}/ILSVRC2012_val_00000001.JPEG {a}/ILSVRC2012_val_00000001.JPEG",
                               f"n01440764/ILSVRC2012_val_00000002.JPEG {a}/ILSVRC2012_val_00000002.JPEG",
                               f"{b}/ILSVRC2012_val_00000003.JPEG {b}/ILSVRC2012_val_00000003.JPEG"],
        "mapping_test": [f"{b}/ILSVRC2012_val_00000004.JPEG {b}/ILSVRC2012_val_00000004.JPEG"],
        "names_validation": [f"{a}/ILSVRC2012_val_00000001.JPEG {a}/ILSVRC2012_val_00000001.png",
                             f"{a}/ILSVRC2012_val_00000002.JPEG {a}/ILSVRC2012_val_00000002.png",
                             f"{b}/ILSVRC2012_val_00000003.JPEG {b}/ILSVRC2012_val_00000003.png"],
        "names_train_semi": [f"{a}/{a}_11.JPEG {a}/{a}_11.png", f"{b}/{b}_22.JPEG {b}/{b}_22.png"],
    }


@pytest.fixture
def imagenet_s_case(tmp_path):
    """Lists (a slice of the official ones when available), a fake ImageNet holding exactly the
    images they name, and the matching annotation archive."""
    names = hub.imagenet_s_list_names("50")
    if REFERENCE.is_dir():
        lists = _slice_lists({role: (REFERENCE / key).read_text().splitlines() for role, key in names.items()}, 3)
    else:
        lists = _fake_lists()
    lists_dir = tmp_path / "lists"
    for role, key in names.items():
        write(lists_dir / key, "\n".join(lists[role]).encode())
    imagenet = tmp_path / "imagenet"
    seed = 0
    for wnid in lists["categories"]:
        for k in range(2):
            seed += 1
            write(imagenet / "train" / wnid / f"{wnid}_{900 + k}.JPEG", jpeg_bytes(seed))
    for line in lists["names_train_semi"]:
        name = line.split()[0].split("/")[1]
        seed += 1
        write(imagenet / "train" / name.split("_")[0] / name, jpeg_bytes(seed))
    for line in lists["mapping_validation"] + lists["mapping_test"]:
        seed += 1
        write(imagenet / "val" / line.split()[0], jpeg_bytes(seed))
    annotations = {f"ImageNetS50/validation-segmentation/{line.split()[1]}": png_bytes(1, "RGB")
                   for line in lists["names_validation"]}
    annotations.update({f"ImageNetS50/train-semi-segmentation/{line.split()[1]}": png_bytes(2, "RGB")
                        for line in lists["names_train_semi"]})
    return {"lists": lists, "lists_dir": lists_dir, "imagenet": imagenet, "annotations": zip_bytes(annotations)}


def test_get_imagenet_s_end_to_end(server, tmp_path, imagenet_s_case):
    case = imagenet_s_case
    server.files[hub.IMAGENET_S_ANNOTATIONS["50"].filename] = case["annotations"]
    result = run_data_script("get_imagenet_s.py", "--imagenet-dir", str(case["imagenet"]), "--subset", "50",
                        "--lists-dir", str(case["lists_dir"]), mirror=server.base_url, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    root = tmp_path / "data" / "ImageNetS"
    assert (root / "lists" / "categories" / "ImageNetS_categories_im50.txt").is_file()
    subset = root / "ImageNetS50"
    lists = case["lists"]
    assert sorted(p.name for p in (subset / "train").iterdir()) == sorted(lists["categories"])
    for line in lists["mapping_validation"]:
        src, dst = line.split()
        assert os.path.samefile(subset / "validation" / dst, case["imagenet"] / "val" / src)  # hard link
    assert any(line.split()[0].split("/")[0] != line.split()[1].split("/")[0] for line in lists["mapping_validation"])
    for line in lists["names_train_semi"]:
        image, label = line.split()
        assert (subset / "train-semi" / image).is_file() and (subset / "train-semi-segmentation" / label).is_file()
    for line in lists["names_validation"]:
        assert (subset / "validation-segmentation" / line.split()[1]).is_file()
    assert re.search(rf"validation\s+{len(lists['mapping_validation'])}\b", result.stdout)
    n_train = sum(len(list((case["imagenet"] / "train" / wnid).iterdir())) for wnid in lists["categories"])
    assert re.search(rf"\btrain\s+{n_train}\n", result.stdout)


def test_annotation_install_takes_up_an_interrupted_run(server, tmp_path, imagenet_s_case):
    server.files[hub.IMAGENET_S_ANNOTATIONS["50"].filename] = imagenet_s_case["annotations"]
    subset_root, data = tmp_path / "data" / "ImageNetS" / "ImageNetS50", tmp_path / "data"
    install_imagenet_s_annotations("50", subset_root, data, mirror=server.base_url, progress=False)
    validation_label = next((subset_root / "validation-segmentation").glob("*/*.png"))
    inode = validation_label.stat().st_ino
    shutil.rmtree(subset_root / "train-semi-segmentation")  # as if stopped before the second folder
    (subset_root / ".train-semi-segmentation.installed").unlink()
    install_imagenet_s_annotations("50", subset_root, data, mirror=server.base_url, progress=False)
    assert len(list((subset_root / "train-semi-segmentation").glob("*/*.png"))) == len(
        imagenet_s_case["lists"]["names_train_semi"])
    assert validation_label.stat().st_ino == inode  # the finished folder was left alone
    assert not list((data / "downloads").iterdir())
    install_imagenet_s_annotations("50", subset_root, data, mirror=server.base_url, progress=False)
    assert len(server.requests_for(hub.IMAGENET_S_ANNOTATIONS["50"].filename)) == 2


def test_get_imagenet_s_without_imagenet_prints_instructions(tmp_path):
    result = run_data_script("get_imagenet_s.py", "--subset", "50", tmp_path=tmp_path)
    assert result.returncode == 2
    assert "https://image-net.org" in result.stderr and "--imagenet-dir DIR" in result.stderr


def test_build_imagenet_s_checks_every_source_before_linking(tmp_path, imagenet_s_case):
    case = imagenet_s_case
    with pytest.warns(ListMismatchWarning):
        lists = fetch_imagenet_s_lists(tmp_path / "lists_out", "50", lists_dir=case["lists_dir"], progress=False)
    first_val = case["lists"]["mapping_validation"][0].split()[0]
    (case["imagenet"] / "val" / first_val).unlink()
    out = tmp_path / "ImageNetS50"
    with pytest.raises(DatasetLayoutError, match=rf"validation: 1 of \d+ sources are missing .*{first_val}"):
        build_imagenet_s(case["imagenet"], out, lists, progress=False)
    assert not out.exists()


def test_build_imagenet_s_merges_classes_and_accepts_a_flat_val_folder(tmp_path):
    lists_dir = tmp_path / "lists"
    target, merged = "n04355933", "n04356056"  # ImageNet-S 919 merges n04356056 into n04355933
    contents = {"categories": [target],
                "mapping_validation": [f"{merged}/ILSVRC2012_val_00000007.JPEG {target}/ILSVRC2012_val_00000007.JPEG"],
                "mapping_test": [], "names_validation": [], "names_train_semi": []}
    paths = {role: write(lists_dir / f"{role}.txt", "\n".join(lines).encode()) for role, lines in contents.items()}
    imagenet = tmp_path / "imagenet"
    write(imagenet / "train" / target / f"{target}_1.JPEG", jpeg_bytes(1))
    write(imagenet / "train" / merged / f"{merged}_2.JPEG", jpeg_bytes(2))
    write(imagenet / "val" / "ILSVRC2012_val_00000007.JPEG", jpeg_bytes(3))  # flat val/
    counts = build_imagenet_s(imagenet, tmp_path / "out", paths, link_mode="copy", progress=False)
    merged_train = sorted(p.name for p in (tmp_path / "out" / "train" / target).iterdir())
    assert merged_train == [f"{target}_1.JPEG", f"{merged}_2.JPEG"]
    assert (tmp_path / "out" / "validation" / target / "ILSVRC2012_val_00000007.JPEG").is_file()
    assert counts == {"train": 2, "train-semi": 0, "validation": 1, "test": 0}
