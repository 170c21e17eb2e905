"""Read a Taperfile's YAML with the position of every key and value, bounded.

A Taperfile may come from a cloned repository, so the work is bounded before anything
expands: the text's size, and while the YAML is composed, the number of values it stands
for (each alias counted at the full size of what it names: a "billion laughs" document
is refused at the alias that crosses the line), the nesting depth and the length of
numbers. Nothing a message quotes reaches the terminal with its control characters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tapers.errors import TaperfileError
from tapers.taperfile.load import MAX_TEXT_BYTES, display
from tapers.taperfile.units import printable, shown

Loc = tuple[Any, ...]

MAX_VALUES = 100_000  # values in a document with every alias expanded; real Taperfiles have hundreds
MAX_DEPTH = 64  # nesting of mappings and lists, aliases included; real Taperfiles reach about 10
MAX_CHARACTERS = 4 * 1024**2  # characters of text with every alias expanded (the file itself: at most 1 MiB)
MAX_NUMBER = 100  # characters of one number (Python refuses to read ints past 4300 digits)


@dataclass(frozen=True)
class Position:
    file: Path
    line: int  # 1-based
    column: int  # 1-based

    def __str__(self) -> str:
        return f"{display(self.file)}:{self.line}:{self.column}"


@dataclass
class Source:
    """YAML data plus where each key and value came from."""

    data: Any
    keys: dict[Loc, Position] = field(default_factory=dict)
    values: dict[Loc, Position] = field(default_factory=dict)


def dotted(loc: Loc) -> str:
    """machines.web.provision[2].shell: list items are numbered from 1, like steps."""
    text = ""
    for part in loc:
        text += f"[{part + 1}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


class _Refused(Exception):
    """The YAML asks for more work than any Taperfile needs, or has a value YAML can't read:
    where, why and what to do."""

    def __init__(self, mark: Any, loc: Loc, reason: str, hint: str) -> None:
        super().__init__(reason)
        self.mark, self.loc, self.reason, self.hint = mark, loc, reason, hint


_FEWER_ALIASES = "write the values out instead of nesting aliases, or keep big data in files the Taperfile names"
_FLATTER = "nest lists and mappings less deeply; keep big data in files the Taperfile names"
_QUOTE = "quote it if it is text"
_BEFORE = "an alias can only repeat a value defined before it"
_TOO_DEEP = f"nests values more than {MAX_DEPTH} levels deep"


class _BoundedLoader(yaml.SafeLoader):
    """A SafeLoader that measures the document while composing it, before anything expands.

    An alias re-uses a node: it costs nothing to compose, but everything after (the walk for
    positions, constructing, pydantic) visits that node again at every alias. So each node,
    once composed, records how many values it stands for and how deep it goes, and an alias
    adds its node's full count: the total is what a walk of the expanded document would visit."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._values = 0
        self._characters = 0
        self._aliases = False
        self._loc: list[Any] = []  # where the node being composed is; None for a key
        self._sizes: dict[int, tuple[int, int, int]] = {}  # id(node) -> (values, depth, characters)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        self._loc.append(_loc_part(index))
        try:
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent):
                self._alias(event)
                return super().compose_node(parent, index)
            self._count(1, 1, 0, event.start_mark)
            node = super().compose_node(parent, index)
            if isinstance(node, yaml.ScalarNode):
                self._count(0, 0, len(node.value), node.start_mark)
                self._check_scalar(node)
            self._sizes[id(node)] = self._measure(node)
            return node
        finally:
            self._loc.pop()

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:  # noqa: N803 (PyYAML's name)
        """`[[[[...`: refused by the scanner, which reads ahead of the composer and slows down
        with every open bracket it has to keep in mind (quadratically, up to 1024 of them)."""
        if self.flow_level >= MAX_DEPTH:
            raise _Refused(self.get_mark(), self._where(), _TOO_DEEP, _FLATTER)
        super().fetch_flow_collection_start(TokenClass)

    def _alias(self, event: yaml.AliasEvent) -> None:
        node = self.anchors.get(event.anchor)
        if node is None:
            return  # the composer reports the undefined alias
        size = self._sizes.get(id(node))
        if size is None:
            reason = f"the alias `*{event.anchor}` is inside the value it names (a loop)"
            raise _Refused(event.start_mark, self._where(), reason, _BEFORE)
        self._aliases = True
        self._count(*size, event.start_mark)

    def _count(self, values: int, depth: int, characters: int, mark: Any) -> None:
        self._values += values
        self._characters += characters
        if self._characters > MAX_CHARACTERS:
            reason = f"uses YAML aliases that expand to more than {MAX_CHARACTERS // 1024**2} MiB of text"
            raise _Refused(mark, self._where(), reason, _FEWER_ALIASES)
        if self._values > MAX_VALUES:
            reason = (
                f"uses YAML aliases that expand to more than {MAX_VALUES:,} values"
                if self._aliases
                else f"has more than {MAX_VALUES:,} values"
            )
            raise _Refused(mark, self._where(), reason, _FEWER_ALIASES)
        if len(self._loc) - 1 + depth > MAX_DEPTH:
            raise _Refused(mark, self._where(), _TOO_DEEP, _FLATTER)

    def _check_scalar(self, node: yaml.ScalarNode) -> None:
        """Numbers of sane length; and a value its type can read (`!!float x`, `2024-13-45`):
        PyYAML would fail on them later with a bare ValueError, KeyError or AttributeError."""
        if node.tag in (_INT, _FLOAT) and len(node.value) > MAX_NUMBER:
            reason = f"a number {len(node.value):,} characters long: at most {MAX_NUMBER}"
            raise _Refused(node.start_mark, self._where(), reason, _QUOTE)
        if node.tag in _TYPED:
            try:
                self.yaml_constructors[node.tag](self, node)
            except (ArithmeticError, LookupError, TypeError, ValueError, AttributeError):
                reason = f"{shown(node.value)} is not a valid {_TYPED[node.tag]}"
                raise _Refused(node.start_mark, self._where(), reason, _QUOTE) from None

    def _measure(self, node: yaml.Node) -> tuple[int, int]:
        if isinstance(node, yaml.ScalarNode):
            return 1, 1, len(node.value)
        children = node.value if isinstance(node, yaml.SequenceNode) else [n for pair in node.value for n in pair]
        sizes = [self._sizes[id(child)] for child in children]
        return 1 + sum(s[0] for s in sizes), 1 + max((s[1] for s in sizes), default=0), sum(s[2] for s in sizes)

    def _where(self) -> Loc:
        return tuple(part for part in self._loc if part is not None)


_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_TYPED = {
    _INT: "number",
    _FLOAT: "number",
    "tag:yaml.org,2002:bool": "boolean",
    "tag:yaml.org,2002:timestamp": "date",
}


def _loc_part(index: Any) -> Any:
    """The composer's `index`: the key node for a mapping value, a number in a list, None for a key."""
    if isinstance(index, yaml.ScalarNode):
        return index.value
    return index if isinstance(index, int) else None


def parse(path: Path, text: str) -> Source:
    if len(text) > MAX_TEXT_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
        raise TaperfileError(
            f"{display(path)} is larger than {MAX_TEXT_BYTES // 1024**2} MiB: not a Taperfile tapers reads",
            hint="keep scripts and data in files the Taperfile names",
        )
    try:
        loader = _BoundedLoader(text)  # refuses characters YAML does not allow, anywhere
    except yaml.reader.ReaderError as exc:
        raise _unreadable(path, text, exc) from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise TaperfileError(
                f"{display(path)} is empty",
                hint="start from `tapers init` or Taperfile.example.yaml",
            )
        source = Source(data=None)
        _walk(path, node, (), source)
        source.data = loader.construct_document(node)
    except _Refused as exc:
        where = Position(path, exc.mark.line + 1, exc.mark.column + 1)
        problem = printable(f"{where}: {dotted(exc.loc)}: {exc.reason}" if exc.loc else f"{where}: {exc.reason}")
        raise TaperfileError(problem, hint=exc.hint, problems=[problem]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{Position(path, mark.line + 1, mark.column + 1)}" if mark else display(path)
        what = printable(exc.problem or exc.context or "invalid YAML")
        began = exc.context_mark
        if exc.problem and exc.context and began is not None and (began.line, began.column) != (mark.line, mark.column):
            # where the construct that isn't closed began: what to fix, more than where the file ended
            what += printable(f" ({exc.context} that began at {began.line + 1}:{began.column + 1})")
        raise TaperfileError(
            f"{where}: YAML syntax error: {what}",
            hint="check indentation and quoting around that line",
            problems=[f"{where}: YAML syntax error: {what}"],
        ) from None
    except yaml.YAMLError as exc:
        raise TaperfileError(printable(f"{display(path)}: YAML error: {exc}")) from None
    finally:
        loader.dispose()
    if not isinstance(source.data, dict):
        problem = f"{Position(path, 1, 1)}: the file must be a mapping with `version:` and `machines:`"
        raise TaperfileError(f"{display(path)} is invalid (1 problem):\n  {problem}",
                             hint="see Taperfile.example.yaml for every key", problems=[problem])
    return source


def _unreadable(path: Path, text: str, exc: yaml.reader.ReaderError) -> TaperfileError:
    """YAML allows no control characters but tab and line breaks in a file, not even in strings."""
    line = text.count("\n", 0, exc.position) + 1
    column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
    code = exc.character if isinstance(exc.character, int) else 0
    problem = f"{Position(path, line, column)}: the character U+{code:04X} is not allowed in YAML"
    return TaperfileError(problem, hint="remove it: a Taperfile is text", problems=[problem])


def _walk(path: Path, node: yaml.Node, loc: Loc, source: Source) -> None:
    source.values[loc] = Position(path, node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, Position] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            where = Position(path, key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if not isinstance(key_node, yaml.ScalarNode):
                problem = printable(f"{where}: {dotted(loc) or 'top level'}: a key must be a name, not a list or a mapping")
                raise TaperfileError(problem, hint="write the key as plain text", problems=[problem])
            key = key_node.value
            if key in seen:
                problem = printable(f"{where}: duplicate key `{key}` (first defined at line {seen[key].line})")
                raise TaperfileError(problem, hint="remove or rename one of them", problems=[problem])
            seen[key] = where
            source.keys[loc + (key,)] = where
            _walk(path, value_node, loc + (key,), source)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(path, item, loc + (index,), source)


def merge(base: Source, top: Source) -> Source:
    """Deep-merge the override file on top of the Taperfile (mappings merge, the rest replaces)."""

    def merge(a: Any, b: Any, loc: Loc) -> Any:
        if isinstance(a, dict) and isinstance(b, dict):
            out = dict(a)
            for key, value in b.items():
                out[key] = merge(a[key], value, loc + (key,)) if key in a else value
            return out
        return b

    merged = Source(data=merge(base.data, top.data, ()))
    merged.keys = {**base.keys, **top.keys}
    merged.values = {**base.values, **top.values}
    return merged


class _TagTolerantLoader(_BoundedLoader):
    """Bounded, and a value with a tag of its own (Ansible's `!vault`, `!unsafe`) is read as its
    plain value."""


def _plain(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_mapping(node)


_TagTolerantLoader.add_multi_constructor("!", _plain)


def load_data(text: str) -> Any:
    """Any YAML document (a playbook, a role's metadata), with the bounds a Taperfile has.
    Raises ValueError when it can't be read within them."""
    if len(text) > MAX_TEXT_BYTES:
        raise ValueError(f"larger than {MAX_TEXT_BYTES // 1024**2} MiB")
    try:
        loader = _TagTolerantLoader(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except _Refused as exc:
        raise ValueError(exc.reason) from None
    except yaml.YAMLError as exc:
        raise ValueError(f"not YAML ({str(exc).splitlines()[0] if str(exc) else 'invalid'})") from None
