"""`coars-fast data download`: fetch a dataset from its public source into the data directory.

Every transfer goes to `<file>.part` first and resumes from there with an HTTP Range request when
it was cut off; bytes whose SHA-256 is pinned (sources.py) are checked before anything reads them,
and a mismatch deletes them. Archives are unpacked member by member, each pinned member verified
before the dataset folder is renamed into place, so a failed download never leaves a half dataset
where the loaders look. `$COARS_FAST_MIRROR` (a base URL) fetches every file from a mirror that
serves the same paths under a folder named after the original host (the tests' loopback server).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zipfile
from pathlib import Path

from tqdm.auto import tqdm

from coars_fast.data.safe_pickle import load_dataframe
from coars_fast.data.sources import SOURCES, Archive, Remote
from coars_fast.errors import DataError

CHUNK = 1 << 16


def mirrored(url: str) -> str:
    """`url` through $COARS_FAST_MIRROR, when set: https://host/path -> MIRROR/host/path."""
    mirror = os.environ.get("COARS_FAST_MIRROR")
    if not mirror:
        return url
    parts = urllib.parse.urlsplit(url)
    return f"{mirror.rstrip('/')}/{parts.netloc}{parts.path}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, dest: Path, sha256: str | None = None, progress: bool = True, timeout: float = 30) -> Path:
    """Download `url` to `dest` (resuming `dest.part`), verify `sha256` when given, rename into place."""
    url, part = mirrored(url), dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the part is already whole: verify it below
            response = None
        else:
            raise DataError(f"download of {url} failed: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DataError(f"cannot reach {url} ({reason}); check the connection and run the command again") from None
    if response is not None:
        with response:
            resumed = response.status == 206
            total = response.length + (have if resumed else 0) if response.length is not None else None
            with (
                open(part, "ab" if resumed else "wb") as out,
                tqdm(
                    total=total,
                    initial=have if resumed else 0,
                    unit="B",
                    unit_scale=True,
                    desc=dest.name,
                    disable=not progress,
                ) as bar,
            ):
                try:
                    for block in iter(lambda: response.read(CHUNK), b""):
                        out.write(block)
                        bar.update(len(block))
                except (http.client.IncompleteRead, OSError) as err:
                    raise DataError(
                        f"the transfer of {url} stopped after {part.stat().st_size if part.exists() else 0} bytes ({err}); "
                        "run the command again to resume it"
                    ) from None
            if total is not None and part.stat().st_size < total:
                raise DataError(
                    f"the transfer of {url} stopped after {part.stat().st_size} of {total} bytes; "
                    "run the command again to resume it"
                )
    if sha256 is not None and (got := sha256_of(part)) != sha256:
        part.unlink()
        raise DataError(
            f"{url}: SHA-256 {got} is not the pinned {sha256}; the file was deleted (a corrupted "
            "transfer or a changed upstream file)"
        )
    part.rename(dest)
    return dest


def _unpack(archive: Archive, path: Path, target: Path) -> None:
    """Extract the archive's members into `target`, verifying every pinned member."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            missing = [m for m in archive.members if m not in names]
            if missing:
                raise DataError(f"{path.name} lacks {', '.join(missing)}: not the expected archive")
            for member, pinned in archive.members.items():
                out = target / Path(member).name
                with zf.open(member) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                if pinned is not None and (got := sha256_of(out)) != pinned:
                    raise DataError(f"{path.name}: {member} has SHA-256 {got}, not the pinned {pinned}")
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as err:
        path.unlink(missing_ok=True)
        raise DataError(f"{path.name} is not a readable zip archive ({err}); it was deleted, run again") from None


def _save(remote: Remote, path: Path, target: Path, extras: list[Path]) -> None:
    """The verified file `path` into `target/remote.save_as`, converted when the source says so."""
    out = target / remote.save_as
    if remote.convert is None:
        shutil.copyfile(path, out)
    elif remote.convert == "join":  # CRLF text files: the first part whole, the others without their header
        pieces = [path.read_bytes().rstrip(b"\r\n") + b"\r\n"]
        pieces += [extra.read_bytes().split(b"\r\n", 1)[1] for extra in extras]
        out.write_bytes(b"".join(pieces))
    elif remote.convert == "llara":  # columns seq (10 ids, padded), len_seq, next
        if remote.sha256 is None:
            raise ValueError("a pickle source must pin its SHA-256: it is unpickled only once verified")
        frame = load_dataframe(path)
        missing = {"seq", "len_seq", "next"} - set(frame.columns)
        if missing:
            raise DataError(f"{path.name}: no column {sorted(missing)[0]!r}; not a LLaRA split")
        with open(out, "w") as f:
            for row in frame.itertuples():
                record = {"seq": [int(v) for v in row.seq], "len_seq": int(row.len_seq), "next": int(row.next)}
                f.write(json.dumps(record) + "\n")
    else:
        raise ValueError(f"unknown conversion {remote.convert!r}")
    if remote.output_sha256 is not None and (got := sha256_of(out)) != remote.output_sha256:
        raise DataError(
            f"{remote.save_as} converted from {path.name} has SHA-256 {got}, not the pinned {remote.output_sha256}"
        )


def download(name: str, data_dir: Path, progress: bool = True) -> list[Path]:
    """Fetch dataset `name` into the data directory, one folder per source; complete folders are kept."""
    if name not in SOURCES:
        raise DataError(f"no public source for dataset {name!r}; downloadable: {', '.join(SOURCES)}")
    return [_install(source, data_dir, progress) for source in SOURCES[name]]


def _fetch_to_cache(url: str, sha256: str | None, cache: Path, progress: bool) -> Path:
    return fetch(url, cache / Path(urllib.parse.urlsplit(url).path).name, sha256, progress)


def _install(source, data_dir: Path, progress: bool) -> Path:
    final = data_dir / source.folder
    if final.is_dir() and all((final / f).is_file() for f in source.expect):
        return final
    cache = data_dir / ".downloads"
    staging = data_dir / f".{source.folder.replace('/', '_')}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for archive in source.archives:
            path = _fetch_to_cache(archive.url, archive.sha256, cache, progress)
            _unpack(archive, path, staging)
            path.unlink()  # unpacked and verified: the archive is not needed again
        for remote in source.files:
            try:
                path = _fetch_to_cache(remote.url, remote.sha256, cache, progress)
            except DataError as err:
                if not remote.optional:
                    raise
                warnings.warn(f"{remote.save_as} skipped ({err}); the dataset works without it", stacklevel=2)
                continue
            extras = [_fetch_to_cache(url, sha, cache, progress) for url, sha in remote.parts]
            _save(remote, path, staging, extras)
            for used in (path, *extras):
                used.unlink()
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
