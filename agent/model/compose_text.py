"""A compose file's text as plain values: YAML read as compose reads it, with ``${VAR}`` substituted.

Three things differ from ``yaml.safe_load``:

* **YAML 1.2 scalars** (as compose's own Go reader, yaml.v3): only ``true``/``false`` are booleans and
  only plain decimal (``0x``, ``0o``; a leading ``0`` is octal, as Go's) numbers are numbers, so
  ``2222:22`` stays a string (YAML 1.1 reads a base-60 integer, 133342) and ``on``, ``yes``, ``no``,
  ``off`` stay strings (``restart: no`` is not ``False``). Mapping keys are always their text.
* **Line numbers**: :func:`load` returns, beside the value, the line of every key and list item by
  its path (``services.web.ports[0]``), so an error can say where.
* **Variable substitution** of every string value (not keys) as docker compose does: ``$VAR``,
  ``${VAR}``, ``${VAR:-default}`` (unset or empty), ``${VAR-default}`` (unset), ``${VAR:?error}``,
  ``${VAR?error}``, ``${VAR:+alt}``, ``${VAR+alt}``, ``$$`` for a ``$``; defaults may hold variables
  too. A variable that is unset and has no default is an error naming it and its line (docker compose
  only warns and substitutes an empty string; a cluster should not start a database with no password).

:func:`dotenv` reads ``.env`` and ``env_file:`` files (``KEY=VALUE``, ``export``, quotes, comments).
Pure: the caller gives the environment and the files' text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import yaml

Lookup = Callable[[str], str | None]
MAX_NODES = 200_000
"""Values built from one file at most (aliases of aliases could otherwise expand without bound)."""

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class TextError(ValueError):
    """The text is not a compose file's YAML, or a substitution fails; the message names the line."""


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core resolvers for booleans, integers and floats."""


_OLD = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _OLD]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_INT = r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+"
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(rf"^(?:{_INT})$"), list("-+0123456789"))
_FLOAT = r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(rf"^(?:{_FLOAT})$"), list("-+0123456789."))

STR, INT, FLOAT, BOOL, NULL, MERGE = (f"tag:yaml.org,2002:{t}"
                                      for t in ("str", "int", "float", "bool", "null", "merge"))


def load(text: str, lookup: Lookup) -> tuple[object, dict[str, int]]:
    """The document's value (strings substituted from ``lookup``) and the line (1-based) of each path."""
    try:
        root = yaml.compose(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise TextError(f"not YAML: {exc}") from None
    lines: dict[str, int] = {}
    count = [0]

    def value(node: yaml.Node, path: str) -> object:
        count[0] += 1
        if count[0] > MAX_NODES:
            raise TextError(f"more than {MAX_NODES} values (aliases expanding without bound?)")
        if isinstance(node, yaml.MappingNode):
            return mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            out = []
            for i, item in enumerate(node.value):
                lines.setdefault(f"{path}[{i}]", item.start_mark.line + 1)
                out.append(value(item, f"{path}[{i}]"))
            return out
        assert isinstance(node, yaml.ScalarNode)
        return scalar(node, path)

    def mapping(node: yaml.MappingNode, path: str) -> dict[str, object]:
        out: dict[str, object] = {}
        merged: dict[str, object] = {}
        for key_node, value_node in node.value:
            if key_node.tag == MERGE:
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in sources:
                    if not isinstance(source, yaml.MappingNode):
                        raise TextError(f"line {key_node.start_mark.line + 1}: '<<' merges maps only")
                    for k, v in mapping(source, path).items():
                        merged.setdefault(k, v)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise TextError(f"line {key_node.start_mark.line + 1}: a key must be a plain value")
            key = str(key_node.value)
            child = f"{path}.{key}" if path else key
            if key in out:
                raise TextError(f"line {key_node.start_mark.line + 1}: {child} is given twice")
            lines[child] = key_node.start_mark.line + 1
            out[key] = value(value_node, child)
        return {**{k: v for k, v in merged.items() if k not in out}, **out}

    def scalar(node: yaml.ScalarNode, path: str) -> object:
        text, tag = node.value, node.tag
        line = node.start_mark.line + 1
        if tag == NULL:
            return None
        if tag == BOOL:
            return text.lower() == "true"
        if tag == INT:
            sign = -1 if text.startswith("-") else 1
            digits = text.lstrip("+-")
            if digits.startswith(("0x", "0o")):
                return sign * int(digits, 0)
            if len(digits) > 1 and digits.startswith("0") and set(digits) <= set("01234567"):
                return sign * int(digits, 8)  # 0440: octal, as Go's (compose's) reader takes it
            return sign * int(digits)
        if tag == FLOAT:
            low = text.lower().lstrip("+")
            return float(low.replace(".inf", "inf").replace(".nan", "nan"))
        if tag != STR:
            raise TextError(f"line {line}: {path}: the tag {tag} is not supported")
        return substitute(text, lookup, line, path)

    if root is None:
        return None, lines
    return value(root, ""), lines


def substitute(text: str, lookup: Lookup, line: int | None = None, path: str = "") -> str:
    """``text`` with its variables replaced (see the module's doc); TextError naming the variable and line."""
    if "$" not in text:
        return text
    where = (f"line {line}: " if line else "") + (f"{path}: " if path else "")
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c != "$":
            out.append(c)
            i += 1
            continue
        nxt = text[i + 1:i + 2]
        if nxt == "$":
            out.append("$")
            i += 2
            continue
        if nxt == "{":
            end = _closing(text, i + 2)
            if end < 0:
                raise TextError(f"{where}'{text[i:]}' has no closing '}}'")
            out.append(_braced(text[i + 2:end], lookup, where))
            i = end + 1
            continue
        match = NAME_RE.match(text, i + 1)
        if match is None:
            raise TextError(f"{where}a lone '$' in {text!r}: write $$ for a dollar sign")
        name = match.group(0)
        found = lookup(name)
        if found is None:
            raise TextError(f"{where}the variable {name} is not set (give a default: ${{{name}:-value}})")
        out.append(found)
        i = match.end()
    return "".join(out)


def _closing(text: str, start: int) -> int:
    depth = 1
    for j in range(start, len(text)):
        if text.startswith("${", j):
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return -1


def _braced(inner: str, lookup: Lookup, where: str) -> str:
    match = NAME_RE.match(inner)
    if match is None:
        raise TextError(f"{where}'${{{inner}}}' does not start with a variable name")
    name, rest = match.group(0), inner[match.end():]
    value = lookup(name)
    if rest == "":
        if value is None:
            raise TextError(f"{where}the variable {name} is not set (give a default: ${{{name}:-value}})")
        return value
    for op in (":-", ":?", ":+", "-", "?", "+"):
        if rest.startswith(op):
            arg = rest[len(op):]
            break
    else:
        raise TextError(f"{where}'${{{inner}}}' is not ${{VAR}}, ${{VAR:-default}}, ${{VAR:?error}} or ${{VAR:+alt}}")
    unset = value is None or (op.startswith(":") and value == "")
    if op in (":-", "-"):
        return substitute(arg, lookup, None) if unset else str(value)
    if op in (":?", "?"):
        if unset:
            raise TextError(f"{where}the variable {name} is required: {substitute(arg, lookup, None) or 'not set'}")
        return str(value)
    return "" if unset else substitute(arg, lookup, None)


DOTENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*(?:=\s*(.*?))?\s*$")


def dotenv(text: str, lookup: Lookup, source: str = ".env") -> dict[str, str]:
    """``KEY=VALUE`` lines (``export KEY=…``, ``# comments``, ``'single'`` quotes taken as they are,
    ``"double"`` ones with ``\\n`` escapes, ``${VAR}`` substituted from earlier lines then ``lookup``);
    a line ``KEY`` alone takes KEY from ``lookup`` (left out when unset)."""
    out: dict[str, str] = {}

    def find(name: str) -> str | None:
        return out[name] if name in out else lookup(name)

    lines = text.splitlines()
    n = 0
    while n < len(lines):
        raw = lines[n]
        n += 1
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        match = DOTENV_LINE.match(raw)
        if match is None:
            raise TextError(f"{source} line {n}: {raw.strip()[:60]!r} is not KEY=VALUE")
        key, value = match.group(1), match.group(2)
        if value is None:
            found = lookup(key)
            if found is not None:
                out[key] = found
            continue
        if value[:1] in ("'", '"'):
            quote = value[0]
            body = value[1:]
            while quote not in body and n < len(lines):  # a quoted value may span lines
                body += "\n" + lines[n]
                n += 1
            end = body.find(quote)
            if end < 0:
                raise TextError(f"{source} line {n}: the quote {quote} is not closed")
            body = body[:end]
            if quote == '"':
                body = body.replace("\\n", "\n").replace('\\"', '"')
                body = substitute(body, find, n, f"{source} {key}")
            out[key] = body
            continue
        value = re.sub(r"\s+#.*$", "", value)
        out[key] = substitute(value, find, n, f"{source} {key}")
    return out


def lookup_in(*sources: Mapping[str, str]) -> Lookup:
    """The first source that has the variable."""
    def find(name: str) -> str | None:
        for source in sources:
            if name in source:
                return source[name]
        return None

    return find


__all__ = ["Lookup", "TextError", "dotenv", "load", "lookup_in", "substitute"]
