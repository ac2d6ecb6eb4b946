"""Where the tables of a TOML array start: tomllib keeps no line numbers, so a CI annotation of an ``[[expect]]`` row
needs them found here. A small scanner walks the text the way a TOML parser does — strings (basic, literal, both
multi-line, with escapes), comments and brackets that span lines — so a ``[[expect]]`` inside a string, a comment or a
nested array is not taken for a header. Both spellings of an array of tables are found: ``[[name]]`` headers (quoted
or spaced keys too) and a top-level ``name = [{...}, {...}]``. The caller compares the count with what tomllib
parsed and keeps the lines only when they agree."""

from __future__ import annotations

import re

_BARE = re.compile(r"[A-Za-z0-9_-]+")
_ARRAY = re.compile(r"[ \t]*\[")


def table_lines(text: str, name: str) -> list[int]:
    """1-based line of each table of the top-level array `name`, in file order."""
    scanner = _Scanner(text.replace("\r\n", "\n"), name)
    scanner.run()
    return scanner.found


def _key(text: str, i: int) -> tuple[list[str], int] | None:
    """Parse a dotted key at text[i:] (bare or quoted parts, spaces around dots); (parts, end) or None."""
    parts = []
    while True:
        while i < len(text) and text[i] in " \t":
            i += 1
        if i < len(text) and text[i] in "\"'":
            quote, j, chars = text[i], i + 1, []
            while j < len(text) and text[j] != quote and text[j] != "\n":
                if quote == '"' and text[j] == "\\" and j + 1 < len(text):  # an escape: kept as written
                    chars.append(text[j : j + 2])
                    j += 2
                    continue
                chars.append(text[j])
                j += 1
            if j >= len(text) or text[j] != quote:
                return None
            parts.append("".join(chars))
            i = j + 1
        else:
            match = _BARE.match(text, i)
            if not match:
                return None
            parts.append(match.group())
            i = match.end()
        while i < len(text) and text[i] in " \t":
            i += 1
        if i < len(text) and text[i] == ".":
            i += 1
            continue
        return parts, i


class _Scanner:
    """One pass over the text: at each line start outside strings and brackets, a header or a key line."""

    def __init__(self, text: str, name: str) -> None:
        self.text, self.name, self.i, self.line = text, name, 0, 1
        self.found: list[int] = []
        self.depth = 0  # open [ and { of a value
        self.array_depth: int | None = None  # depth of the inline array `name = [...]` while inside it
        self.root = True  # no table header seen yet

    def run(self) -> None:
        while self.i < len(self.text):
            self._line_start()
            self._rest_of_line()

    def _line_start(self) -> None:
        text = self.text
        while self.i < len(text) and text[self.i] in " \t":
            self.i += 1
        if self.depth or self.i >= len(text) or text[self.i] in "#\n":
            return
        if text[self.i] == "[":  # a table header: [name] or [[name]]
            double = text.startswith("[[", self.i)
            parsed = _key(text, self.i + (2 if double else 1))
            if parsed and double and parsed[0] == [self.name]:
                self.found.append(self.line)
            self.root = False
            close = text.find("]" * (2 if double else 1), parsed[1] if parsed else self.i)
            self.i = len(text) if close < 0 else close + (2 if double else 1)
            return
        parsed = _key(text, self.i)
        if parsed and parsed[1] < len(text) and text[parsed[1]] == "=":
            self.i = parsed[1] + 1
            if self.root and parsed[0] == [self.name] and _ARRAY.match(text, self.i):
                self.array_depth = self.depth + 1  # the value's own [ opens it

    def _rest_of_line(self) -> None:
        text = self.text
        while self.i < len(text):
            c = text[self.i]
            if c == "\n":
                self.i += 1
                self.line += 1
                return
            if c == "#":
                end = text.find("\n", self.i)
                self.i = len(text) if end < 0 else end
            elif c in "\"'":
                self._string(c)
            elif c in "[{":
                self.depth += 1
                if c == "{" and self.array_depth is not None and self.depth == self.array_depth + 1:
                    self.found.append(self.line)
                self.i += 1
            elif c in "]}":
                if self.array_depth is not None and self.depth == self.array_depth:
                    self.array_depth = None
                self.depth -= 1
                self.i += 1
            else:
                self.i += 1

    def _string(self, quote: str) -> None:
        text = self.text
        multi = text.startswith(quote * 3, self.i)
        self.i += 3 if multi else 1
        while self.i < len(text):
            c = text[self.i]
            if c == "\\" and quote == '"':
                self.line += text[self.i + 1 : self.i + 2] == "\n"
                self.i += 2
            elif multi and text.startswith(quote * 3, self.i):
                self.i += 3
                while self.i < len(text) and text[self.i] == quote:  # up to two quotes belong to the content
                    self.i += 1
                return
            elif not multi and c in (quote, "\n"):
                self.i += c == quote
                return
            else:
                self.line += c == "\n"
                self.i += 1
