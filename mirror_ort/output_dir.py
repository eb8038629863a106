"""Output directories: what ``--force`` may replace.

``export -o DIR --force`` and ``distill -o DIR --force`` replace a directory only when it is
empty or mirror-ort wrote it (it holds the marker file of its kind); anything else, and a
file in its place, is refused before any work starts, so a slip of ``-o`` never deletes a
home directory or a project.
"""

from pathlib import Path

from .errors import MirrorError


def claim_output(output: Path, force: bool, markers: tuple[str, ...], what: str, busy_hint: str = "pass --force") -> bool:
    """Check that ``output`` may be written; True when it holds earlier output that will be replaced."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise MirrorError(f"output {output} is a file: choose a directory path for -o")
    if not output.exists() or not any(output.iterdir()):
        return False
    if not force:
        raise MirrorError(f"output {output} is in use (not empty): choose another -o or {busy_hint}")
    if not any((output / marker).is_file() for marker in markers):
        raise MirrorError(f"output {output} is not {what} (no {' or '.join(markers)}), so --force will not replace "
                          "it: it would delete files mirror-ort did not write; choose another -o")
    return True
