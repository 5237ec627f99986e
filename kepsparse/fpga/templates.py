"""Where the HLS / RTL / cocotb templates live, and how they are rendered.

Installed wheel: CMakeLists.txt installs the repository's ``hls/`` as ``kepsparse/_hls``;
that copy is used first. Editable install / checkout: the repository's ``hls/`` beside the
package. Templates are plain files rendered with ``string.Template`` (``${name}``
placeholders, every one required: a missing value is an error, never a silent blank).
"""
from __future__ import annotations

import string
from pathlib import Path

from ..errors import BackendUnavailableError, KepError

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def template_root() -> Path:
    """The folder holding cpp/, rtl/, cocotb/, tcl/ templates."""
    for candidate in (_PACKAGE_DIR / "_hls", _PACKAGE_DIR.parent / "hls"):
        if (candidate / "rtl" / "kep_sparse_conv.v").is_file():
            return candidate
    raise BackendUnavailableError(
        f"the HLS/RTL templates are missing (looked in {_PACKAGE_DIR / '_hls'} and "
        f"{_PACKAGE_DIR.parent / 'hls'}); reinstall kepsparse from a complete source tree")


def template_path(relative: str) -> Path:
    path = template_root() / relative
    if not path.is_file():
        raise BackendUnavailableError(f"template {relative} is missing from {template_root()}")
    return path


def render(relative: str, **values) -> str:
    """Render template ``relative`` (e.g. ``cpp/kernel.cpp.in``) with ``values``."""
    text = template_path(relative).read_text()
    try:
        return string.Template(text).substitute({k: str(v) for k, v in values.items()})
    except KeyError as exc:
        raise KepError(f"template {relative} needs a value for {exc.args[0]!r}") from None
    except ValueError as exc:  # a stray '$' in the template
        raise KepError(f"template {relative} is malformed: {exc}") from None
