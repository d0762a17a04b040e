"""Writing output folders atomically: a report or a launch folder appears whole, or not at all."""

import os
import shutil
import tempfile
from pathlib import Path

EXECUTABLE_SUFFIXES = (".sh",)
"""Files written with the executable bit (launch scripts)."""


def write_folder(folder: Path, files: dict[str, str]) -> Path:
    """Write `files` (relative name -> text; names may contain `/`) into `folder`, replacing it atomically.

    Everything is written into a staging folder beside the target and moved into place with one rename,
    so an interrupted run never leaves a half-written report or config; a previous folder of the same name
    is replaced only once the new one is complete."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
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
