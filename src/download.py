"""Fetch an archive over HTTP(S), verify its checksum and unpack it safely (CUB's `--download`).

Nothing is left behind on failure: the archive goes to a temporary file that is always removed,
and it is unpacked into a temporary folder whose entries are moved into place only when the whole
archive unpacked cleanly. Extraction uses tarfile's 'data' filter, which refuses absolute paths,
paths escaping the target, links pointing outside it and device files.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

from tqdm import tqdm

from src.errors import SuiteError

log = logging.getLogger(__name__)

CHUNK = 1 << 20


def fetch(url: str, dest: Path, md5: str | None, timeout: float = 60.0) -> None:
    """Download `url` to `dest` with a progress bar; fail (leaving no `dest`) unless the md5 matches."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise SuiteError(f"--download-url {url!r} must be an http:// or https:// address")
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with (
            urllib.request.urlopen(url, timeout=timeout) as resp,  # noqa: S310 (scheme checked)
            open(dest, "wb") as f,
        ):
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=Path(dest).name) as bar:
                while chunk := resp.read(CHUNK):
                    f.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, ValueError) as e:
        Path(dest).unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e
        raise SuiteError(
            f"download of {url} failed ({reason}); check the network, or fetch the file by hand "
            "and unpack it into --source"
        ) from None
    if md5 is not None and digest.hexdigest() != md5.lower():
        Path(dest).unlink(missing_ok=True)
        raise SuiteError(
            f"checksum mismatch for {url}: md5 {digest.hexdigest()}, expected {md5} "
            "(truncated or wrong file); nothing was kept, try again or use another --download-url"
        )


def safe_extract(archive: Path, target: Path) -> list[str]:
    """Unpack a tar archive into `target` (all or nothing); return the top-level names it added.

    Fails without touching `target` if the archive is broken, holds unsafe members, or would
    overwrite something already in `target`.
    """
    target.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract.", dir=target))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
            raise SuiteError(
                f"{archive.name} is not a valid archive or holds unsafe paths ({e}); "
                "nothing was extracted"
            ) from None
        names = sorted(p.name for p in tmp.iterdir())
        if not names:
            raise SuiteError(f"{archive.name} is empty; nothing was extracted")
        clash = [n for n in names if (target / n).exists()]
        if clash:
            raise SuiteError(
                f"{target / clash[0]} already exists; remove it (or drop --download) and retry"
            )
        for n in names:
            os.replace(tmp / n, target / n)
        return names
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def download_and_extract(url: str, md5: str | None, target: Path) -> list[str]:
    """Fetch `url`, verify it and unpack it into `target`; a failed run leaves `target` as it was."""
    created = not target.exists()
    target.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".download.", suffix=".part", dir=target)
    os.close(fd)
    archive = Path(name)
    try:
        log.info("downloading %s into %s", url, target)
        fetch(url, archive, md5)
        names = safe_extract(archive, target)
        log.info("extracted %s into %s", ", ".join(names), target)
        return names
    except BaseException:
        archive.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                target.rmdir()  # only if still empty
        raise
    finally:
        archive.unlink(missing_ok=True)
