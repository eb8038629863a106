"""Parameter types shared by the click commands (``cli.py`` and the subcommands' own modules)."""

import click


class IntOrAuto(click.ParamType):
    """A number (a window length, a layer), or auto."""

    name = "INTEGER|auto"

    def convert(self, value, param, ctx):
        if value == "auto" or isinstance(value, int):
            return value
        try:
            return int(value)
        except ValueError:
            self.fail(f"{value!r} is neither auto nor an integer", param, ctx)


INT_OR_AUTO = IntOrAuto()
