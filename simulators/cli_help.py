"""Help texts of the ``rerank-env`` commands: defaults always shown, no markup.

:class:`HelpFormatter` ends every option's help with its default (or says it has
none); :func:`field_docs` turns a config dataclass's ``Attributes:`` docstring into
one-line option help, so an option's help and the field's documentation cannot
drift apart; :func:`plain` strips reStructuredText from text shown in a terminal.
"""

from __future__ import annotations

import argparse
import re
import textwrap
from typing import Any

_ROLE = re.compile(r":(?:func|class|meth|data|attr|mod|obj):`~?([^`]+)`")


def plain(text: str) -> str:
    """``text`` without reStructuredText markup (````x````, ``:func:`x```)."""
    text = _ROLE.sub(lambda match: match.group(1).rsplit(".", 1)[-1], text)
    return text.replace("``", "")


def shown_default(value: Any) -> str:
    """A default as a user would type it on the command line."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value)) or "none"
    if value is None:
        return "none"
    return str(value)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written; every option's help ends with its default.

    Help that already holds ``(default`` is left alone (it explains what the
    default means); a flag says ``(default: off)``, an option without a value
    ``(default: none)``. Descriptions keep their line breaks; lines wider than the
    terminal are wrapped.
    """

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines = []
        for line in text.splitlines():
            if len(indent + line) <= width:
                lines.append((indent + line).rstrip())
                continue
            # "  name    text" continues under "text"; other lines under their own indent
            column = re.match(r"\s*\S+ {2,}", line) or re.match(r"\s*", line)
            lines.append(
                textwrap.fill(
                    line,
                    width,
                    initial_indent=indent,
                    break_on_hyphens=False,
                    subsequent_indent=indent + " " * len(column.group(0)),
                )
            )
        return "\n".join(lines)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            not action.option_strings  # positional: required, no default
            or action.default is argparse.SUPPRESS  # --help, --version
            or "(default" in text  # it says what its default means
        ):
            return text
        default = shown_default(action.default).replace("%", "%%")  # argparse formats help
        return f"{text} (default: {default})".strip()


def field_docs(cls: type) -> dict[str, str]:
    """First sentence of each field's entry in ``cls``'s ``Attributes:`` docstring, plain.

    Raises:
        ValueError: ``cls`` documents no attributes (so options would have no help).
    """
    docs: dict[str, list[str]] = {}
    lines = (cls.__doc__ or "").splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Attributes:")
    except StopIteration:
        raise ValueError(f"{cls.__name__}'s docstring has no 'Attributes:' section") from None
    indent = None
    name = None
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        indent = depth if indent is None else indent
        if depth < indent:
            break  # the section ended
        entry = re.match(r"(\w+)(?: \([^)]*\))?: (.*)", line.strip())
        if depth == indent and entry:
            name = entry.group(1)
            docs[name] = [entry.group(2)]
        elif name is not None:
            docs[name].append(line.strip())
    return {key: _first_sentence(plain(" ".join(parts))) for key, parts in docs.items()}


def _first_sentence(text: str) -> str:
    """Up to the first full stop outside parentheses (without it)."""
    depth = 0
    for index, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "." and depth == 0 and text[index + 1 : index + 2] in ("", " "):
            return text[:index]
    return text.rstrip(".")
