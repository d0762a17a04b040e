"""The Vega runtime that report.html inlines, generated once and then read from a disk cache.

vl-convert bundles Vega, Vega-Lite and vega-embed into one script (about 0.9 MB) but takes 1.7 s to do it, which
was most of a `planner solve`. The bundle is a pure function of vl-convert's version and the Vega-Lite version
asked for (the same bytes every time), so the first report writes it to the user's cache folder and every later
one reads it back in milliseconds. Without a writable cache folder the bundle is generated each time (slower,
same bytes).
"""

import os
import tempfile
from functools import cache
from pathlib import Path

VEGA_LITE_VERSION = "6.4"
"""The Vega-Lite minor version the bundle carries and the charts' specifications are written for."""
VEGA_LITE_SCHEMA = "https://vega.github.io/schema/vega-lite/v6.4.1.json"
"""`$schema` of every chart: the release of that minor version the specifications are checked against."""


def cache_dir() -> Path:
    """`$PLANNER_CACHE_DIR`, else `$XDG_CACHE_HOME/planner`, else `~/.cache/planner`."""
    if os.environ.get("PLANNER_CACHE_DIR"):
        return Path(os.environ["PLANNER_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "planner"


def bundle_path() -> Path:
    import vl_convert

    return cache_dir() / f"vega-bundle-vl{VEGA_LITE_VERSION}-vlconvert{vl_convert.__version__}.js"


def _generate() -> str:
    import vl_convert

    return vl_convert.javascript_bundle(vl_version=VEGA_LITE_VERSION)


def _store(path: Path, text: str) -> None:
    """Write the bundle atomically (a reader never sees half of it); a cache that cannot be written is skipped."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        pass


@cache
def vega_bundle() -> str:
    """Vega, Vega-Lite and vega-embed as one script defining window.vegaEmbed, safe inside a <script> element."""
    path = bundle_path()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        text = _generate()
        _store(path, text)
    return text.replace("</script", "<\\/script")
