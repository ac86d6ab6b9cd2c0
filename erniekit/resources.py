"""What ships with erniekit, found the same way from a wheel, an sdist build or a source checkout.

Inside an installed package::

    erniekit/recipes/           the repository's top-level recipes/, copied in by setup.py's build_py
    erniekit/configs/           the top-level configs/ (presets recipes include with base:), likewise
    erniekit/data/samples/      sample data and the sample tokenizer (package data)

A source checkout (and an editable install, which imports the checkout) has no ``erniekit/recipes/``
or ``erniekit/configs/``: the same files are the checkout's top-level ``recipes/`` and ``configs/``,
next to ``setup.py``. Nothing here depends on
the working directory.

Paths in recipes mean one thing everywhere: ``samples://NAME`` is a bundled sample (a data file or a
directory such as ``samples://ernie_tokenizer``); any other path is the user's, relative to the working
directory or absolute.
"""

from __future__ import annotations

from pathlib import Path

from erniekit.errors import ErniekitError

PACKAGE_DIR = Path(__file__).resolve().parent
SAMPLES_DIR = PACKAGE_DIR / "data" / "samples"
SAMPLES_SCHEME = "samples://"


def shipped_dir(kind: str) -> Path:
    """The shipped ``recipes`` or ``configs`` directory: inside the package, or at a checkout's top level."""
    packaged = PACKAGE_DIR / kind
    if packaged.is_dir():
        return packaged
    checkout = PACKAGE_DIR.parent
    if (checkout / "setup.py").is_file() and (checkout / kind).is_dir():
        return checkout / kind
    raise ErniekitError(
        f"this erniekit installation ({PACKAGE_DIR}) has no {kind}/: it was built without them; "
        "reinstall from a wheel or sdist built by setup.py"
    )


def resolve_path(path: str | Path) -> Path:
    """A recipe path as a file-system path: ``samples://NAME`` -> the bundled sample; others as given."""
    text = str(path)
    if text.startswith(SAMPLES_SCHEME):
        return SAMPLES_DIR / text[len(SAMPLES_SCHEME) :]
    return Path(text).expanduser()
