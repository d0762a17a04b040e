"""Writing output folders atomically: a report or a launch folder appears whole, or not at all."""

import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from planner.errors import PlannerError
from planner.inputs import one_line

EXECUTABLE_SUFFIXES = (".sh",)
"""Files written with the executable bit (launch scripts)."""
STALE_STAGING_S = 3600
"""Age after which a staging or backup folder of ours (`.NAME.<8 random>`, `.NAME.old-<pid>`) beside an
output folder is taken as left behind by a killed run and removed. A live write takes seconds."""


def _our_leftovers(folder: Path) -> re.Pattern:
    """Names of the staging folders tempfile.mkdtemp makes for `folder` (8 characters of
    [a-z0-9_]) and of the backups write_folder makes of a previous folder."""
    return re.compile(rf"\.{re.escape(folder.name)}\.(?:[a-z0-9_]{{8}}|old-[0-9]+)")


def remove_stale_staging(folder: Path, now: float | None = None) -> list[Path]:
    """Remove staging and backup folders of `folder` older than STALE_STAGING_S (runs killed between
    mkdtemp and the final rename leave them); returns what was removed. Only our own name pattern, only
    folders, only old ones: a concurrent run's staging folder is seconds old and is left alone."""
    now = time.time() if now is None else now
    pattern = _our_leftovers(folder)
    removed = []
    try:
        siblings = list(folder.parent.iterdir())
    except OSError:
        return removed
    for path in siblings:
        try:
            stale = now - path.lstat().st_mtime > STALE_STAGING_S
        except OSError:
            continue
        if pattern.fullmatch(path.name) and path.is_dir() and not path.is_symlink() and stale:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def check_output_folder(folder: Path, flag: str = "--out", own_name: bool = True) -> Path:
    """Refuse, before any work, an output folder that cannot be written: no name (`.`, `/`; allowed when
    not `own_name`, for a folder files are written into rather than one replaced whole), a name too long
    for the file system, a file in the way, or a parent the user may not write to."""
    folder = Path(folder)
    shown = one_line(str(folder))
    if own_name and folder.name in ("", ".", ".."):
        raise PlannerError(f"{flag} {shown} names no folder of its own", f"pass a new folder, e.g. {flag} reports/run1")
    _check_path_length(folder, flag)
    if folder.exists() and not folder.is_dir():
        raise PlannerError(f"{flag} {shown} is a file", "pass a folder name, or move the file")
    _check_writable(folder if folder.is_dir() and not own_name else folder.parent, shown, flag)
    return folder


def check_output_file(path: Path, flag: str = "--out") -> Path:
    """Refuse, before any work, an output file that cannot be written (a folder in the way, a name too
    long, a parent the user may not write to)."""
    path = Path(path)
    shown = one_line(str(path))
    _check_path_length(path, flag)
    if path.name in ("", ".", "..") or path.is_dir():
        raise PlannerError(f"{flag} {shown} is a folder, not a file name", f"pass a file, e.g. {flag} out.csv")
    _check_writable(path.parent, shown, flag)
    return path


def _check_path_length(path: Path, flag: str) -> None:
    for part in path.parts:
        if len(os.fsencode(part)) > 255:
            raise PlannerError(f"{flag}: the name {one_line(part, 40)} is longer than 255 bytes", "use a shorter name")
    if len(os.fsencode(str(path))) > 4000:
        raise PlannerError(f"{flag} path is longer than 4000 bytes", "use a shorter path")


def _check_writable(folder: Path, shown: str, flag: str) -> None:
    """The nearest existing ancestor of `folder` (itself included) is a folder the user may write in."""
    ancestor = folder
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise PlannerError(f"{flag} {shown}: {one_line(str(ancestor))} is a file, not a folder", "pick another path")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PlannerError(f"{flag} {shown}: cannot write in {one_line(str(ancestor))}", "pick a folder you can write")


def write_folder(folder: Path, files: dict[str, str]) -> Path:
    """Write `files` (relative name -> text; names may contain `/`) into `folder`, replacing it atomically.

    Everything is written into a staging folder beside the target and moved into place with one rename,
    so an interrupted run never leaves a half-written report or config; a previous folder of the same name
    is replaced only once the new one is complete. The one window: between the two renames at the end
    (microseconds) the old folder sits at `.NAME.old-<pid>` and the new one at `.NAME.<random>`; a kill
    exactly then leaves both there, and the next write of the same folder removes them after an hour.
    Any OSError (disk full, permissions) becomes a one-line PlannerError and leaves no staging folder."""
    folder = Path(folder)
    try:
        return _write_folder(folder, files)
    except OSError as exc:
        raise PlannerError(
            f"cannot write {one_line(str(folder))}: {one_line(exc.strerror or exc, 100)}",
            "check the folder's permissions and free space, or pass another --out",
        ) from None


def _write_folder(folder: Path, files: dict[str, str]) -> Path:
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(folder)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for name, text in files.items():
            path = staging / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            if path.suffix in EXECUTABLE_SUFFIXES:
                path.chmod(0o755)
        # mkdtemp creates 0700 folders; give the result the permissions an ordinary mkdir would.
        umask = os.umask(0)
        os.umask(umask)
        for sub in [staging, *(p for p in staging.rglob("*") if p.is_dir())]:
            sub.chmod(0o777 & ~umask)
        backup = None
        if folder.exists():
            backup = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            os.replace(folder, backup)
        os.replace(staging, folder)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder
