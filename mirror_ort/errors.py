"""User-facing errors: one line that names the problem and the fix."""


class MirrorError(Exception):
    """An error caused by input the user can fix; the CLI prints it as one line and exits 2."""
