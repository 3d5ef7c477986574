"""What one SMS request carries: the text cut to fit, and the provider's body filled in.

Values are never spliced into JSON text. The body template is a structure (parsed from
the config once); placeholders are replaced inside its strings and the whole is
serialised afterwards, so a quote, backslash or newline in the text is escaped by the
serialiser, at every level: a string field that is itself JSON (Aliyun's TemplateParam,
`'{"text": "{text}"}'`) is kept as a structure too, filled, and written back as text.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeAlias

from pydantic import JsonValue

PLACEHOLDER = re.compile(r"\{([A-Za-z_]\w*)\}")
NAMES = ("phone", "text", "id")
ELLIPSIS = "…"
_ZWJ = "\u200d"


@dataclass(frozen=True, slots=True)
class _JsonText:
    """A string field whose content is JSON: filled as a structure, then serialised."""

    template: Node


Node: TypeAlias = "str | int | float | bool | list[Node] | dict[str, Node] | _JsonText | None"


def _as_json_text(value: str) -> JsonValue:
    """The parsed value if `value` is a JSON object or array, else None."""
    if not value.lstrip().startswith(("{", "[")):
        return None
    try:
        parsed: JsonValue = json.loads(value)
    except ValueError:
        return None  # `{text}` alone is a placeholder, not JSON
    return parsed if isinstance(parsed, (dict, list)) else None


def _compile(value: JsonValue, where: str, used: set[str]) -> Node:
    if isinstance(value, dict):
        return {k: _compile(v, f"{where}.{k}", used) for k, v in value.items()}
    if isinstance(value, list):
        return [_compile(v, f"{where}.{i}", used) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value
    nested = _as_json_text(value)
    if nested is not None:
        return _JsonText(_compile(nested, where, used))
    for name in PLACEHOLDER.findall(value):
        if name not in NAMES:
            raise ValueError(f"{where}: unknown placeholder {{{name}}}; use {{phone}}, {{text}} or {{id}}")
        used.add(name)
    return value


class BodyTemplate:
    """A provider's request fields with `{phone}`, `{text}`, `{id}` in their strings."""

    def __init__(self, body: Mapping[str, JsonValue], *, form: bool) -> None:
        used: set[str] = set()
        self._root = {k: _compile(v, f"body.{k}", used) for k, v in body.items()}
        missing = [n for n in ("phone", "text") if n not in used]
        if missing:
            raise ValueError(f"body must use {', '.join('{' + n + '}' for n in missing)}")
        if form:
            nested = [k for k, v in self._root.items() if isinstance(v, (dict, list))]
            if nested:
                raise ValueError(f"a form body holds only text and numbers; {nested[0]} is a structure")

    def json(self, values: Mapping[str, str]) -> dict[str, JsonValue]:
        """The filled body, for a JSON request."""
        return {k: _fill(v, values) for k, v in self._root.items()}

    def form(self, values: Mapping[str, str]) -> dict[str, str]:
        """The filled body as form fields (or query parameters)."""
        return {k: _form_value(_fill(v, values)) for k, v in self._root.items()}


def compile_body(body: Mapping[str, JsonValue], *, form: bool) -> BodyTemplate:
    """Check and precompile a body template; ValueError says what is wrong."""
    return BodyTemplate(body, form=form)


def _fill(node: Node, values: Mapping[str, str]) -> JsonValue:
    if isinstance(node, str):
        return PLACEHOLDER.sub(lambda m: values[m[1]], node)
    if isinstance(node, _JsonText):
        return json.dumps(_fill(node.template, values), ensure_ascii=False, separators=(",", ":"))
    if isinstance(node, dict):
        return {k: _fill(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill(v, values) for v in node]
    return node


def _form_value(value: JsonValue) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)  # true, 3, 2.5 as a provider reads them


def fit_text(text: str, message_id: str, *, max_chars: int, id_suffix: str) -> str:
    """`text` + the id suffix in at most `max_chars` characters (as Chinese providers
    count them: a 汉字, a letter or a mark is one). A longer text is cut, never inside a
    character sequence (an accent, an emoji with its modifiers), and ends with `…`."""
    suffix = id_suffix.replace("{id}", message_id)
    if len(text) + len(suffix) <= max_chars:
        return text + suffix
    cut = _boundary(text, max(0, max_chars - len(suffix) - len(ELLIPSIS)))
    return text[:cut].rstrip() + ELLIPSIS + suffix


def _boundary(text: str, n: int) -> int:
    """The largest cut at or before `n` that keeps every character sequence whole."""
    while 0 < n < len(text) and _joined(text, n):
        n -= 1
    return n


def _joined(text: str, n: int) -> bool:
    """Whether text[n] belongs to the same visible character as text[n - 1]."""
    before, after = text[n - 1], text[n]
    code = ord(after)
    if _ZWJ in (before, after) or unicodedata.category(after) in {"Mn", "Mc", "Me"}:
        return True
    if 0xFE00 <= code <= 0xFE0F or 0x1F3FB <= code <= 0x1F3FF or 0xE0020 <= code <= 0xE007F:
        return True  # variation selectors, skin tones, tag sequences (subdivision flags)
    if _regional(after) and _regional(before):
        # Flags are pairs of regional indicators: split only after an even run.
        start = n
        while start > 0 and _regional(text[start - 1]):
            start -= 1
        return (n - start) % 2 == 1
    return False


def _regional(ch: str) -> bool:
    return 0x1F1E6 <= ord(ch) <= 0x1F1FF
