"""Help text of the ``raystate`` command line as a shell user expects it.

Typer's rich help (0.29) writes a type after every parameter, ``--help <bool>`` for flags
too, and puts required arguments in braces in the usage line (``describe [OPTIONS] {ID}``).
These command classes show flags bare, arguments by their name (``describe [OPTIONS] ID``),
and options by their metavar where one is given (``--limit N``).
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption


class PlainArgument(TyperArgument):
    def display_type_rich(self, ctx: Any) -> str | None:
        return None  # the name and the help say it

    def _usage_display_name(self) -> str:
        name = self.display_name_raw
        name = name if self.required else f"[{name}]"
        return name + ("..." if self.nargs != 1 else "")


class PlainOption(TyperOption):
    def display_type_rich(self, ctx: Any) -> str | None:
        return None if self.is_flag else super().display_type_rich(ctx)


def _plain(param: Any) -> Any:
    if type(param) is TyperArgument:
        param.__class__ = PlainArgument
    elif type(param) is TyperOption:
        param.__class__ = PlainOption
    return param


class RaystateCommand(TyperCommand):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params = [_plain(p) for p in self.params]

    def get_help_option(self, ctx: Any) -> Any:
        return _plain(super().get_help_option(ctx))


class RaystateGroup(TyperGroup):
    def get_help_option(self, ctx: Any) -> Any:
        return _plain(super().get_help_option(ctx))
