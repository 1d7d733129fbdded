"""Tests of course_lib.data.download against a real HTTP server on 127.0.0.1."""
from __future__ import annotations

import hashlib
import io
import re
import socket
import tarfile
import threading
import zipfile
from collections import namedtuple
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from course_lib.data import download as dl
from course_lib.data.download import (ArchiveError, ChecksumError, DownloadError, InsufficientSpaceError,
                                      UnverifiedDownloadWarning, download, extract, extraction_marker, part_path,
                                      record_path, remove_download)


class FileServer:
    """A local HTTP server for tests: serves ``files`` (name -> bytes) with Range support.

    Per-file ``modes``: ``"ignore_range"`` (always answers 200 with the whole file) or ``"404"``.
    ``cuts[name] = n`` sends only the first ``n`` bytes of the next response, then drops the
    connection. Each file has an ``ETag``; a ``Range`` request whose ``If-Range`` names another
    version gets the whole file. Every request is appended to ``log`` (path, Range header, status, bytes sent).
    """

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.modes: dict[str, str] = {}
        self.cuts: dict[str, int] = {}
        self.log: list[dict] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.state = self
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def requests_for(self, name: str) -> list[dict]:
        return [r for r in self.log if r["path"] == name]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):
        state: FileServer = self.server.state
        name = self.path.lstrip("/").split("?")[0]
        record = {"path": name, "range": self.headers.get("Range"), "status": None, "sent": 0}
        state.log.append(record)
        if state.modes.get(name) == "404" or name not in state.files:
            record["status"] = 404
            self.send_error(404, "Not Found")
            return
        data = state.files[name]
        etag = f'"{hashlib.sha256(data).hexdigest()[:16]}"'
        record["if_range"] = self.headers.get("If-Range")
        start = 0
        match = re.match(r"bytes=(\d+)-$", record["range"] or "")
        current = record["if_range"] in (None, etag)  # If-Range: resume only the same version
        if match and current and state.modes.get(name) != "ignore_range":
            start = int(match.group(1))
            if start >= len(data):
                record["status"] = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            record["status"] = 206
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            record["status"] = 200
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.end_headers()
        cut = name in state.cuts
        if cut:
            body = body[:state.cuts.pop(name)]
        record["sent"] = len(body)  # recorded first: the client may finish before write() returns
        self.wfile.write(body)
        if cut:
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def server():
    instance = FileServer()
    yield instance
    instance.close()


@pytest.fixture
def payload():
    return np.random.default_rng(0).bytes(300_000)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_verifies_checksum_and_moves_into_place(server, payload, tmp_path):
    server.files["weights.pth"] = payload
    dest = tmp_path / "sub" / "weights.pth"
    result = download(server.url("weights.pth"), dest, sha256=sha256(payload), progress=False)
    assert result == dest
    assert dest.read_bytes() == payload
    assert not part_path(dest).exists()

    md5_dest = tmp_path / "md5.bin"
    download(server.url("weights.pth"), md5_dest, md5=hashlib.md5(payload).hexdigest(),
             expected_size=len(payload), progress=False)
    assert md5_dest.read_bytes() == payload


def test_cut_connection_keeps_part_and_second_call_resumes_with_range(server, payload, tmp_path):
    server.files["big.bin"] = payload
    server.cuts["big.bin"] = 100_000
    dest = tmp_path / "big.bin"
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        download(server.url("big.bin"), dest, sha256=sha256(payload), progress=False)
    assert not dest.exists()
    assert part_path(dest).stat().st_size == 100_000

    download(server.url("big.bin"), dest, sha256=sha256(payload), progress=False)
    assert dest.read_bytes() == payload
    first, second = server.requests_for("big.bin")
    assert first["range"] is None
    assert second["range"] == "bytes=100000-" and second["status"] == 206
    assert second["sent"] == len(payload) - 100_000


def test_file_changed_on_the_server_between_attempts_restarts_from_zero(server, payload, tmp_path):
    server.files["moving.bin"] = payload
    server.cuts["moving.bin"] = 50_000
    dest = tmp_path / "moving.bin"
    with pytest.raises(DownloadError):
        download(server.url("moving.bin"), dest, progress=False)
    new_version = payload[::-1]
    server.files["moving.bin"] = new_version
    with pytest.warns(UnverifiedDownloadWarning):  # no checksum: only If-Range protects the resume
        download(server.url("moving.bin"), dest, progress=False)
    assert dest.read_bytes() == new_version
    second = server.requests_for("moving.bin")[1]
    assert second["range"] == "bytes=50000-" and second["if_range"] and second["status"] == 200
    assert not list(tmp_path.glob("*.part*"))


def test_server_that_ignores_range_restarts_from_zero(server, payload, tmp_path):
    server.files["plain.bin"] = payload
    server.modes["plain.bin"] = "ignore_range"
    dest = tmp_path / "plain.bin"
    part_path(dest).write_bytes(payload[:5000])
    download(server.url("plain.bin"), dest, sha256=sha256(payload), progress=False)
    assert dest.read_bytes() == payload
    (request,) = server.requests_for("plain.bin")
    assert request["range"] == "bytes=5000-" and request["status"] == 200


def test_range_not_satisfiable_finishes_a_complete_part_or_restarts(server, payload, tmp_path):
    server.files["done.bin"] = payload
    complete = tmp_path / "done.bin"
    part_path(complete).write_bytes(payload)  # downloaded, but the rename never happened
    download(server.url("done.bin"), complete, sha256=sha256(payload), progress=False)
    assert complete.read_bytes() == payload
    assert server.requests_for("done.bin")[0]["status"] == 416

    too_long = tmp_path / "again.bin"
    part_path(too_long).write_bytes(payload + b"extra bytes from another file")
    download(server.url("done.bin"), too_long, sha256=sha256(payload), progress=False)
    assert too_long.read_bytes() == payload
    assert [r["status"] for r in server.requests_for("done.bin")[1:]] == [416, 200]


def test_a_sha256_prefix_is_checked_as_torchvision_checks_it(server, payload, tmp_path):
    server.files["resnet.pth"] = payload
    dest = download(server.url("resnet.pth"), tmp_path / "resnet.pth", sha256=sha256(payload)[:8], progress=False)
    assert dest.read_bytes() == payload
    wrong = ("0" if sha256(payload)[0] != "0" else "1") + sha256(payload)[1:8]
    with pytest.raises(ChecksumError, match=f"sha256 starting with {wrong}"):
        download(server.url("resnet.pth"), tmp_path / "other.pth", sha256=wrong, progress=False)
    assert not (tmp_path / "other.pth").exists()
    with pytest.raises(ValueError, match="first 8"):
        download(server.url("resnet.pth"), tmp_path / "short.pth", sha256=sha256(payload)[:7], progress=False)
    with pytest.raises(ValueError, match="md5"):
        download(server.url("resnet.pth"), tmp_path / "short.pth", md5=hashlib.md5(payload).hexdigest()[:8],
                 progress=False)


def test_checksum_mismatch_raises_and_keeps_nothing(server, payload, tmp_path):
    server.files["bad.bin"] = payload
    dest = tmp_path / "bad.bin"
    with pytest.raises(ChecksumError, match="Run the same command again") as error:
        download(server.url("bad.bin"), dest, sha256="0" * 64, progress=False)
    assert server.url("bad.bin") in str(error.value)
    assert not dest.exists() and not part_path(dest).exists()


def test_http_404_raises_download_error_naming_url_and_status(server, tmp_path):
    dest = tmp_path / "missing.bin"
    with pytest.raises(DownloadError, match="HTTP 404") as error:
        download(server.url("missing.bin"), dest, progress=False)
    assert server.url("missing.bin") in str(error.value)
    assert "report the URL" in str(error.value)
    assert not dest.exists() and not part_path(dest).exists()


def test_unreachable_host_raises_download_error(tmp_path):
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DownloadError, match="Could not reach"):
        download(f"http://127.0.0.1:{port}/x.bin", tmp_path / "x.bin", progress=False, timeout=5)


def test_not_enough_disk_space_is_detected_before_writing(server, payload, tmp_path, monkeypatch):
    server.files["huge.bin"] = payload
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    dest = tmp_path / "huge.bin"
    with pytest.raises(InsufficientSpaceError, match=r"only 1000 B are free") as error:
        download(server.url("huge.bin"), dest, progress=False)
    assert "293.0 KiB are needed" in str(error.value)
    assert not dest.exists() and not part_path(dest).exists()


def test_present_file_is_not_downloaded_again_unless_corrupt(server, payload, tmp_path):
    server.files["w.pth"] = payload
    dest = tmp_path / "w.pth"
    download(server.url("w.pth"), dest, sha256=sha256(payload), progress=False)
    download(server.url("w.pth"), dest, sha256=sha256(payload), progress=False)
    assert len(server.requests_for("w.pth")) == 1

    dest.write_bytes(b"damaged")
    download(server.url("w.pth"), dest, sha256=sha256(payload), progress=False)
    assert dest.read_bytes() == payload
    assert len(server.requests_for("w.pth")) == 2


def test_unknown_checksum_warns_with_computed_sha256_and_size_is_checked(server, payload, tmp_path):
    server.files["tofu.bin"] = payload
    dest = tmp_path / "tofu.bin"
    with pytest.warns(UnverifiedDownloadWarning, match=sha256(payload)):
        download(server.url("tofu.bin"), dest, progress=False)
    assert dest.read_bytes() == payload

    with pytest.raises(DownloadError, match="registry expects 12345"):
        download(server.url("tofu.bin"), tmp_path / "sized.bin", expected_size=12345, progress=False)
    assert not (tmp_path / "sized.bin").exists() and not part_path(tmp_path / "sized.bin").exists()


@pytest.mark.filterwarnings("ignore::course_lib.data.download.UnverifiedDownloadWarning")
@pytest.mark.parametrize("damage", ["empty", "directory", "truncated", "changed"])
def test_a_file_without_a_checksum_is_checked_against_the_sha256_recorded_at_its_download(server, payload,
                                                                                          tmp_path, damage):
    server.files["tofu.bin"] = payload
    dest = tmp_path / "tofu.bin"
    download(server.url("tofu.bin"), dest, progress=False)
    assert record_path(dest).read_text() == f"{sha256(payload)}  tofu.bin\n"
    if damage == "directory":
        remove_download(dest)
        dest.mkdir()
    else:
        dest.write_bytes({"empty": b"", "truncated": payload[:1000], "changed": payload[::-1]}[damage])
    download(server.url("tofu.bin"), dest, progress=False)
    assert dest.read_bytes() == payload and len(server.requests_for("tofu.bin")) == 2
    assert record_path(dest).read_text() == f"{sha256(payload)}  tofu.bin\n"


@pytest.mark.filterwarnings("ignore::course_lib.data.download.UnverifiedDownloadWarning")
def test_validate_rejects_a_present_file_and_a_new_download_and_force_replaces_a_good_one(server, payload,
                                                                                          tmp_path, capsys):
    server.files["w.bin"] = payload
    dest = tmp_path / "w.bin"
    dest.write_bytes(b"not what validate wants")
    download(server.url("w.bin"), dest, sha256=sha256(payload),
             validate=lambda path: None if path.read_bytes() == payload else "it is not the payload", progress=False)
    assert dest.read_bytes() == payload and "[redo]" in capsys.readouterr().out

    with pytest.raises(DownloadError, match="gave a file that is not usable: it is too big"):
        download(server.url("w.bin"), tmp_path / "other.bin", validate=lambda path: "it is too big", progress=False)
    assert not (tmp_path / "other.bin").exists() and not part_path(tmp_path / "other.bin").exists()

    dest.write_bytes(b"an old version")
    download(server.url("w.bin"), dest, force=True, progress=False)  # no checksum given: force alone replaces it
    assert dest.read_bytes() == payload and "[force]" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------- extraction

def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _tar_gz(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
    return path


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_extract_writes_marker_and_is_not_redone_but_half_done_is(tmp_path, kind):
    members = {"top/a.txt": b"alpha", "top/sub/b.txt": b"beta", "__MACOSX/top/._a.txt": b"junk"}
    archive = tmp_path / f"data.{kind}"
    if kind == "zip":
        archive.write_bytes(zip_bytes(members))
    else:
        _tar_gz(archive, members)
    out = tmp_path / "out"
    extract(archive, out, progress=False)
    assert (out / "top" / "sub" / "b.txt").read_bytes() == b"beta"
    assert (kind == "zip") != (out / "__MACOSX").exists()  # zip tools' resource forks are skipped
    assert extraction_marker(archive, out).is_file()

    (out / "top" / "a.txt").unlink()
    extract(archive, out, progress=False)  # finished: nothing is redone
    assert not (out / "top" / "a.txt").exists()
    extraction_marker(archive, out).unlink()  # as if interrupted before the end
    extract(archive, out, progress=False)
    assert (out / "top" / "a.txt").read_bytes() == b"alpha"


@pytest.mark.parametrize("member", ["../evil.txt", "/tmp/evil_absolute.txt", "ok/../../evil.txt"])
def test_extract_rejects_path_traversal_in_zip(tmp_path, member):
    archive = tmp_path / "bad.zip"
    archive.write_bytes(zip_bytes({"fine.txt": b"x", member: b"evil"}))
    with pytest.raises(ArchiveError, match="outside the target folder"):
        extract(archive, tmp_path / "out", progress=False)
    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "out" / "fine.txt").exists()  # checked before anything is written
    assert not extraction_marker(archive, tmp_path / "out").exists()


def test_extract_rejects_tar_traversal_and_escaping_links(tmp_path):
    traversal = _tar_gz(tmp_path / "t1.tar.gz", {"../evil.txt": b"evil"})
    with pytest.raises(ArchiveError, match="outside the target folder"):
        extract(traversal, tmp_path / "out1", progress=False)
    link = _tar_gz(tmp_path / "t2.tar.gz", {"a.txt": b"a"}, links={"passwd": "../../../etc/passwd"})
    with pytest.raises(ArchiveError, match="points outside"):
        extract(link, tmp_path / "out2", progress=False)
    assert not (tmp_path / "evil.txt").exists()


def test_extract_reports_corrupt_and_unknown_archives(tmp_path):
    data = bytearray(zip_bytes({"a.txt": b"hello world" * 100}))
    position = data.find(b"hello")
    data[position:position + 5] = b"HELLO"  # payload changed, CRC no longer matches
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match="corrupt"):
        extract(corrupt, tmp_path / "out", progress=False)
    unknown = tmp_path / "plain.zip"
    unknown.write_bytes(b"not an archive at all")
    with pytest.raises(ArchiveError, match="neither a zip nor a tar"):
        extract(unknown, tmp_path / "out", progress=False)
