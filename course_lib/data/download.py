"""Reliable downloads and archive extraction (standard library only).

:func:`download` fetches one URL to a file so that a learner can trust what is on disk:

- bytes go to ``<dest>.part``; only a complete file whose size and checksum were verified is
  moved to ``dest`` with an atomic :func:`os.replace`, so nothing half-written ever sits at ``dest``;
- an interrupted transfer leaves the ``.part`` file, and the next call resumes it with an HTTP
  ``Range`` request, guarded by ``If-Range`` so that only bytes of the same version of the file
  are appended (a server that ignores ``Range``, or a changed file, makes it start from zero);
- a ``dest`` that already matches its checksum is not downloaded again, and one that does not (or is
  empty, or a directory, or fails the caller's ``validate`` check) is reported and replaced;
- when no checksum is known, the SHA-256 of the first download is recorded beside the file in
  ``<dest>.sha256`` (``sha256sum`` format) and later calls check the file against it;
- every failure is an exception that says what went wrong and what to do:
  :class:`DownloadError` (HTTP error, unreachable host, cut connection),
  :class:`ChecksumError` (corrupt or changed file), :class:`InsufficientSpaceError` (disk full).

When no checksum is known the file is accepted on first use and an
:class:`UnverifiedDownloadWarning` reports the SHA-256 that was computed (and recorded).

:func:`extract` unpacks zip and tar(.gz) archives, refusing members that would land outside the
target folder, and leaves a marker so that a finished extraction is not redone while an
interrupted one is.
"""
from __future__ import annotations

import errno
import hashlib
import http.client
import os
import re
import shutil
import stat
import tarfile
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Callable

from course_lib.config import progress as progress_bar

MiB = 1 << 20
MIN_SHA256_PREFIX = 8  # hex digits: the shortest SHA-256 prefix accepted as a checksum (torchvision's)
SPACE_MARGIN = 64 * MiB  # keep this much free beyond the file itself
USER_AGENT = "course_lib-downloader/1.0 (+python-urllib)"
MIRROR_VARIABLE = "COURSE_DOWNLOAD_MIRROR"  # replaces every registry URL by <mirror>/<file name> (course_lib.data.hub)


class DownloadError(RuntimeError):
    """A download failed (HTTP error, unreachable host, connection cut, wrong size)."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not match the expected checksum."""


class InsufficientSpaceError(DownloadError):
    """Not enough free disk space for the file that is about to be downloaded."""


class ArchiveError(RuntimeError):
    """An archive is unsafe (a member escapes the target folder), corrupt or of unknown type."""


class UnverifiedDownloadWarning(UserWarning):
    """A file was downloaded without a known checksum (trusted on first use)."""


def part_path(dest: str | os.PathLike) -> Path:
    """The temporary file ``<dest>.part`` that receives the bytes while they arrive."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


def record_path(dest: str | os.PathLike) -> Path:
    """The file ``<dest>.sha256`` that keeps the SHA-256 of a download that had no known checksum."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".sha256")


def remove_download(dest: str | os.PathLike) -> None:
    """Delete a downloaded file and its SHA-256 record (an archive once it is extracted, a bad file)."""
    Path(dest).unlink(missing_ok=True)
    record_path(dest).unlink(missing_ok=True)


def file_checksum(path: str | os.PathLike, algorithm: str = "sha256", chunk_size: int = MiB) -> str:
    """Hex digest of a file, read in chunks (``algorithm``: any :mod:`hashlib` name)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    md5: str | None = None,
    expected_size: int | None = None,
    resume: bool = True,
    progress: bool = True,
    chunk_size: int = MiB,
    timeout: float = 60.0,
    force: bool = False,
    validate: Callable[[Path], str | None] | None = None,
) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``.

    ``sha256`` or ``md5`` (hex) is checked before the file is moved into place; with neither, the
    file is trusted on first use, an :class:`UnverifiedDownloadWarning` gives its SHA-256, and that
    value is recorded in :func:`record_path` so that later calls check the file against it.
    ``sha256`` may also be a prefix of the digest (at least :data:`MIN_SHA256_PREFIX` hex digits): the
    file must then start with it, which is the check torchvision's ``check_hash=True`` makes with the
    prefix its weight files carry in their names (e.g. ``resnet101-63fe2227.pth``).
    ``expected_size`` (bytes) is checked against the server's ``Content-Length`` before anything
    is written and against the finished file. ``resume=False`` discards an earlier ``.part`` file.

    An existing ``dest`` is kept only if it is a non-empty file with the right size and checksum (or
    recorded SHA-256) that passes ``validate``; otherwise it is reported, deleted and downloaded again.
    ``validate(path)`` returns ``None`` for a good file, else the reason it is not (e.g. a weight file
    that does not load); it also checks every new download before it is moved into place.
    ``force=True`` downloads again whatever is there (the old file stays until the new one is verified).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    algorithm, expected = _expected_checksum(sha256, md5)
    if force:
        print(f"[force] downloading {dest} again, whatever is there now.")
        resume = False
        if dest.is_dir() and not dest.is_symlink():
            _remove_bad(dest)  # a file cannot replace a directory; one with files in it is refused now
    elif dest.exists() or dest.is_symlink():
        problem, checked = _existing_file_problem(dest, algorithm, expected, expected_size, validate)
        if problem is None:
            print(f"[ok] {dest} is already present ({checked}); not downloading it again.")
            return dest
        print(f"[redo] {dest} exists but {problem}; deleting it and downloading it again.")
        _remove_bad(dest)

    part = part_path(dest)
    if not resume or (expected_size is not None and part.exists() and part.stat().st_size > expected_size):
        _discard(part)  # not wanted, or longer than the real file: not a prefix of it
    offset = part.stat().st_size if part.exists() else 0

    if expected_size is None or offset < expected_size:
        _transfer(url, part, offset, expected_size, progress, chunk_size, timeout)
    computed = _verify(url, part, algorithm, expected, expected_size)
    problem = validate(part) if validate is not None else None
    if problem is not None:
        _discard(part)
        raise DownloadError(
            f"{url} gave a file that is not usable: {problem}. It was deleted. If the URL is a mirror "
            f"(--mirror or {MIRROR_VARIABLE}), check that it holds the right file; otherwise run the same command "
            "again, and if this repeats, report the URL to the course maintainers."
        )
    os.replace(part, dest)
    _validator_path(part).unlink(missing_ok=True)
    if computed is not None:
        _write_record(dest, computed)
    else:  # verified against the registry: an old record would only be stale
        record_path(dest).unlink(missing_ok=True)
    return dest


def _existing_file_problem(dest: Path, algorithm, expected, expected_size,
                           validate: Callable[[Path], str | None] | None) -> tuple[str | None, str]:
    """``(None, what was checked)`` if ``dest`` is the wanted file, else ``(the reason it is not, "")``."""
    if not dest.is_file():
        return ("it is a directory, not a file" if dest.is_dir() else "it is not a regular file"), ""
    size = dest.stat().st_size
    record = record_path(dest)
    if size == 0:
        return "it is empty (0 bytes)", ""
    if expected_size is not None and size != expected_size:
        return f"its size is {size} bytes, expected {expected_size}", ""
    if algorithm is not None:
        if not file_checksum(dest, algorithm).startswith(expected):
            return f"its {algorithm} does not match the registry ({_described(algorithm, expected)})", ""
        checked = f"its {algorithm} matches the registry"
    elif record.is_file():
        fields = record.read_text().split()
        recorded = fields[0] if fields else ""
        computed = file_checksum(dest, "sha256")
        if computed != recorded:
            return (f"its sha256 ({computed}) differs from the one recorded when it was downloaded "
                    f"({recorded or 'an empty record'}, in {record.name}): it was damaged or changed"), ""
        checked = f"its sha256 matches the one recorded when it was downloaded ({record.name})"
    else:
        checked = "no checksum is known and none was recorded"
    problem = validate(dest) if validate is not None else None
    if problem is not None:
        return problem, ""
    if algorithm is None and not record.is_file():
        _write_record(dest, file_checksum(dest, "sha256"))
        checked += f": its sha256 is recorded now in {record.name}"
    return None, checked


def _remove_bad(dest: Path) -> None:
    """Delete a file at ``dest`` that is not the wanted one (and its record); an empty directory is removed,
    a directory with files in it is left alone (it may be the user's)."""
    if dest.is_dir() and not dest.is_symlink():
        try:
            dest.rmdir()
        except OSError:
            raise DownloadError(
                f"{dest} is a directory with files in it, where the downloaded file must go: move it away "
                "or delete it, then run the same command again.") from None
        record_path(dest).unlink(missing_ok=True)
        return
    remove_download(dest)


def _write_record(dest: Path, sha256: str) -> None:
    """Record ``sha256`` of ``dest`` in ``<dest>.sha256`` (written to a temporary name, then renamed)."""
    record = record_path(dest)
    temporary = record.with_name(record.name + ".tmp")
    temporary.write_text(f"{sha256}  {dest.name}\n")
    os.replace(temporary, record)


def _validator_path(part: Path) -> Path:
    """Where the server's ``ETag`` / ``Last-Modified`` of a partial download is kept, so that a
    resume (``If-Range``) only appends bytes of the same version of the file."""
    return part.with_name(part.name + ".validator")


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _validator_path(part).unlink(missing_ok=True)


def _expected_checksum(sha256: str | None, md5: str | None) -> tuple[str | None, str | None]:
    if sha256 is not None and md5 is not None:
        raise ValueError("Give either sha256 or md5, not both.")
    if sha256 is not None:
        if not re.fullmatch(f"[0-9a-fA-F]{{{MIN_SHA256_PREFIX},64}}", sha256):
            raise ValueError(f"sha256 must be the hex digest or its first {MIN_SHA256_PREFIX} to 64 hex "
                             f"digits, got {sha256!r}")
        return "sha256", sha256.lower()
    if md5 is not None:
        if not re.fullmatch("[0-9a-fA-F]{32}", md5):
            raise ValueError(f"md5 must be the 32 hex digits of the digest, got {md5!r}")
        return "md5", md5.lower()
    return None, None


def _transfer(url, part: Path, offset: int, expected_size, progress: bool, chunk_size: int,
              timeout: float) -> None:
    """Append the bytes of ``url`` from ``offset`` on to ``part``."""
    validator_file = _validator_path(part)
    validator = validator_file.read_text().strip() if offset and validator_file.exists() else None
    try:
        response = _open(url, offset, timeout, validator)
    except _RangeNotSatisfiable as error:  # nothing after `offset`: complete, or not a prefix
        if error.total == offset or (error.total is None and expected_size is None):
            return
        _discard(part)
        offset = 0
        response = _open(url, 0, timeout)
    with response:
        if offset and (response.status != 206 or _content_range_start(response) != offset):
            print(f"[restart] the server did not resume {url} at byte {offset} (no range support, or "
                  "the file changed); starting from zero.")
            offset = 0
        if offset == 0:
            _remember_validator(response, validator_file)
        total = _total_size(response, offset)
        if expected_size is not None and total is not None and total != expected_size:
            raise DownloadError(
                f"The server announces {total} bytes for {url}, but the registry expects "
                f"{expected_size}. The file on the server may have changed: report the URL to the "
                "course maintainers, or set COURSE_DOWNLOAD_MIRROR to a mirror with the right file."
            )
        total = total if total is not None else expected_size
        _check_free_space(part, total, offset)
        _stream(url, response, part, offset, total, progress, chunk_size)


class _RangeNotSatisfiable(Exception):
    """HTTP 416: the server has no bytes after the requested offset (``total``: its file size)."""

    def __init__(self, total: int | None):
        super().__init__(total)
        self.total = total


def _remember_validator(response, validator_file: Path) -> None:
    """Keep a strong ``ETag`` (else ``Last-Modified``) of a download that starts from zero."""
    etag = response.headers.get("ETag")
    value = etag if etag and not etag.startswith("W/") else response.headers.get("Last-Modified")
    if value:
        validator_file.write_text(value + "\n")
    else:
        validator_file.unlink(missing_ok=True)


def _open(url: str, offset: int, timeout: float, validator: str | None = None):
    """The HTTP response for ``url`` from byte ``offset``, only if the file still matches
    ``validator`` (``If-Range``); raises :class:`_RangeNotSatisfiable` on 416."""
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if validator:
            headers["If-Range"] = validator
    request = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            match = re.match(r"bytes \*/(\d+)", error.headers.get("Content-Range", ""))
            error.close()
            raise _RangeNotSatisfiable(int(match.group(1)) if match else None) from None
        raise DownloadError(f"HTTP {error.code} ({error.reason}) for {url}. " + _http_advice(error.code)) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(
            f"Could not reach {url}: {reason}. Check your internet connection (and proxy settings), "
            "then run the same command again; if the host is down, set COURSE_DOWNLOAD_MIRROR to a mirror."
        ) from None


def _http_advice(code: int) -> str:
    if code in (401, 403):
        return ("The server refuses access: the file may need a login or a licence (see "
                "data_scripts/README.md), or the link was withdrawn; report the URL to the course maintainers.")
    if code == 404:
        return ("The file is not (or no longer) at this address: report the URL to the course "
                "maintainers, or set COURSE_DOWNLOAD_MIRROR to a mirror that has it.")
    if code >= 500:
        return "The server has a problem: wait a little and run the same command again."
    return "Run the same command again; if it keeps failing, report the URL to the course maintainers."


def _content_range_start(response) -> int | None:
    match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _total_size(response, offset: int) -> int | None:
    """Size of the whole file from ``Content-Range`` (206) or ``Content-Length`` (200)."""
    if response.status == 206:
        match = re.match(r"bytes \d+-\d+/(\d+)", response.headers.get("Content-Range", ""))
        if match:
            return int(match.group(1))
    length = response.headers.get("Content-Length")
    if length is None:
        return None
    return int(length) + (offset if response.status == 206 else 0)


def _check_free_space(part: Path, total: int | None, offset: int) -> None:
    if total is None:
        return
    needed = total - offset
    free = shutil.disk_usage(part.parent).free
    if free < needed + SPACE_MARGIN:
        raise InsufficientSpaceError(
            f"Not enough free disk space in {part.parent}: {_human(needed)} are needed for "
            f"{part.name[:-5]} (plus a {_human(SPACE_MARGIN)} margin) but only {_human(free)} are free. "
            "Free some space, or point COURSE_DATA / COURSE_CACHE (or --data-dir) at a larger disk, "
            "then run the same command again."
        )


def _stream(url, response, part: Path, offset: int, total, progress: bool, chunk_size: int) -> None:
    bar_options = {"total": total, "initial": offset, "unit": "B", "unit_scale": True,
                   "unit_divisor": 1024, "desc": part.name[:-5]}
    if not progress:
        bar_options["disable"] = True
    received = offset
    with open(part, "ab" if offset else "wb") as handle, progress_bar(**bar_options) as bar:
        while True:
            try:
                block = response.read(chunk_size)
            except (http.client.HTTPException, OSError) as error:
                raise _cut(url, part, received, total, error) from None
            if not block:
                break
            try:
                handle.write(block)
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                raise InsufficientSpaceError(
                    f"The disk filled up while writing {part} ({received} bytes kept). Free some space, "
                    "then run the same command again to resume."
                ) from None
            received += len(block)
            bar.update(len(block))
    if total is not None and received < total:
        raise _cut(url, part, received, total, "the server closed the connection early")


def _cut(url, part: Path, received: int, total, reason) -> DownloadError:
    of_total = f" of {total}" if total is not None else ""
    return DownloadError(
        f"The connection to {url} was cut after {received}{of_total} bytes ({reason}). "
        f"The partial file is kept at {part}: run the same command again to resume."
    )


def _verify(url: str, part: Path, algorithm, expected, expected_size) -> str | None:
    """Check the finished ``part`` file; returns its SHA-256 when no checksum is known (to be recorded)."""
    size = part.stat().st_size
    if expected_size is not None and size != expected_size:
        _discard(part)
        raise DownloadError(
            f"{url} gave {size} bytes, but the registry expects {expected_size}; the partial file was "
            "deleted. Run the same command again; if this repeats, report the URL to the course maintainers."
        )
    if algorithm is None:
        computed = file_checksum(part, "sha256")
        warnings.warn(
            f"No published checksum is known for {url}: it was accepted on first use "
            f"({size} bytes, sha256={computed}); the value is recorded beside the file "
            f"({record_path(part.with_suffix('')).name}) and later runs check the file against it.",
            UnverifiedDownloadWarning,
            stacklevel=3,
        )
        return computed
    computed = file_checksum(part, algorithm)
    if not computed.startswith(expected):   # a full digest must be equal; a prefix must begin it
        _discard(part)
        raise ChecksumError(
            f"Checksum mismatch for {url}: expected {_described(algorithm, expected)}, got {computed}. The corrupt "
            "file was deleted. Run the same command again to retry; if it fails again, the file on the "
            "server has changed: report the URL to the course maintainers."
        )
    return None


def _described(algorithm: str, expected: str) -> str:
    """A registry checksum as it is checked: ``<algorithm> <digest>``, or ``<algorithm> starting with <prefix>``."""
    full = len(expected) == 2 * hashlib.new(algorithm).digest_size
    return f"{algorithm} {expected}" if full else f"{algorithm} starting with {expected}"


def _human(n_bytes: int) -> str:
    """``n_bytes`` in binary units, e.g. ``1.5 GiB``."""
    if n_bytes < 1024:
        return f"{n_bytes} B"
    value = n_bytes / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


# --------------------------------------------------------------------------------------- extraction

SKIPPED_PREFIXES = ("__MACOSX/",)  # resource forks that macOS zip tools add


def extraction_marker(archive: str | os.PathLike, dest_dir: str | os.PathLike) -> Path:
    """The marker ``<dest_dir>/.<archive name>.extracted`` written when an extraction finished."""
    return Path(dest_dir) / f".{Path(archive).name}.extracted"


def extract(archive: str | os.PathLike, dest_dir: str | os.PathLike, progress: bool = True) -> Path:
    """Extract a zip, tar or tar.gz ``archive`` into ``dest_dir`` and return ``dest_dir``.

    Every member is checked before anything is written: absolute paths, ``..`` components, links
    that point outside ``dest_dir`` and device files raise :class:`ArchiveError`. A finished
    extraction leaves :func:`extraction_marker`, so calling again does nothing; an interrupted one
    has no marker and is redone from the start. Zip members are CRC-checked while they are read.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    marker = extraction_marker(archive, dest_dir)
    if marker.exists():
        print(f"[ok] {archive.name} was already extracted into {dest_dir}.")
        return dest_dir
    if not archive.is_file():
        raise FileNotFoundError(f"Archive {archive} does not exist.")
    dest_dir.mkdir(parents=True, exist_ok=True)
    bar_options = {"unit": "file", "desc": f"extract {archive.name}"}
    if not progress:
        bar_options["disable"] = True
    if zipfile.is_zipfile(archive):
        _extract_zip(archive, dest_dir, bar_options)
    elif tarfile.is_tarfile(archive):
        _extract_tar(archive, dest_dir, bar_options)
    else:
        raise ArchiveError(f"{archive} is neither a zip nor a tar archive: delete it and download it again.")
    marker.write_text(f"{archive.name} {archive.stat().st_size}\n")
    return dest_dir


def _safe_member_path(name: str, archive: Path) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or re.match(r"^[A-Za-z]:", name):
        raise ArchiveError(
            f"Unsafe member {name!r} in {archive}: it would be written outside the target folder. "
            "The archive was not extracted; delete it and get it from the official source."
        )
    return path


def _extract_zip(archive: Path, dest_dir: Path, bar_options: dict) -> None:
    try:
        with zipfile.ZipFile(archive) as handle:
            members = [m for m in handle.infolist() if not m.filename.startswith(SKIPPED_PREFIXES)]
            for member in members:
                _safe_member_path(member.filename, archive)
                if stat.S_ISLNK(member.external_attr >> 16):
                    raise ArchiveError(f"Member {member.filename!r} of {archive} is a symbolic link; refusing it.")
            with progress_bar(total=len(members), **bar_options) as bar:
                for member in members:
                    handle.extract(member, dest_dir)
                    bar.update(1)
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise ArchiveError(f"{archive} is corrupt ({error}): delete it and download it again.") from None


def _extract_tar(archive: Path, dest_dir: Path, bar_options: dict) -> None:
    root = dest_dir.resolve()
    try:
        with tarfile.open(archive) as handle:
            members = handle.getmembers()
            for member in members:
                path = _safe_member_path(member.name, archive)
                if member.issym() or member.islnk():
                    base = root / path.parent if member.issym() else root
                    target = (base / member.linkname).resolve()
                    if member.linkname.startswith("/") or not target.is_relative_to(root):
                        raise ArchiveError(
                            f"Link {member.name!r} -> {member.linkname!r} in {archive} points outside "
                            "the target folder; refusing to extract."
                        )
                elif not (member.isfile() or member.isdir()):
                    raise ArchiveError(f"Member {member.name!r} of {archive} is a device or pipe; refusing it.")
            options = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            with progress_bar(total=len(members), **bar_options) as bar:
                for member in members:
                    handle.extract(member, dest_dir, **options)
                    bar.update(1)
    except (tarfile.TarError, EOFError) as error:
        raise ArchiveError(f"{archive} is corrupt ({error}): delete it and download it again.") from None
