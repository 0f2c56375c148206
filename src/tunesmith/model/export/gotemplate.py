"""Render the small part of Go's text/template that tunesmith's Ollama templates use.

Written by hand because no maintained Python library renders Go templates, and tunesmith
must render its Modelfile TEMPLATE to prove, before writing it, that Ollama will build
the same prompt text as the chat template used in training. Covered: text, `{{- -}}`
whitespace trimming, `{{ .Field }}` and `{{ $.Field }}`, `range` (also `range $i, $m :=`,
with `$i`, `$m` and `$m.Field`), `if` / `else if` / `else` / `end`, and the functions eq,
ne, or, and, not. Anything else is an error, so a template this cannot render is never
called verified.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
RANGE_VARIABLES = re.compile(r"^(\$\w+)\s*(?:,\s*(\$\w+)\s*)?:=\s*(.+)$", re.S)
TOKEN = re.compile(r'\(|\)|"(?:[^"\\]|\\.)*"|[^\s()]+')
SPACE = " \t\r\n"


class GoTemplateError(ValueError):
    pass


@dataclass
class _Block:
    kind: str                       # root, range, if
    expr: str = ""
    body: list[Any] = field(default_factory=list)
    branches: list[tuple[str, list[Any]]] = field(default_factory=list)   # if: (condition, body)
    otherwise: list[Any] | None = None


def render(template: str, data: dict[str, Any]) -> str:
    out: list[str] = []
    _run(_parse(template).body, data, {"$": data}, out)
    return "".join(out)


def _pieces(template: str) -> list[tuple[str, str]]:
    pieces: list[tuple[str, str]] = []
    position, trim_next = 0, False
    for match in ACTION.finditer(template):
        text = template[position:match.start()]
        if trim_next:
            text = text.lstrip(SPACE)
        if match.group(1):
            text = text.rstrip(SPACE)
        pieces += [("text", text), ("action", match.group(2).strip())]
        trim_next, position = bool(match.group(3)), match.end()
    tail = template[position:]
    pieces.append(("text", tail.lstrip(SPACE) if trim_next else tail))
    return pieces


def _parse(template: str) -> _Block:
    root = _Block("root")
    stack = [root]

    def body() -> list[Any]:
        top = stack[-1]
        if top.kind == "if":
            return top.otherwise if top.otherwise is not None else top.branches[-1][1]
        return top.body

    for kind, text in _pieces(template):
        if kind == "text":
            if text:
                body().append(text)
        elif text.startswith("range "):
            block = _Block("range", text[6:].strip())
            body().append(block)
            stack.append(block)
        elif text.startswith("if "):
            block = _Block("if", branches=[(text[3:].strip(), [])])
            body().append(block)
            stack.append(block)
        elif text.startswith("else if ") and stack[-1].kind == "if" and stack[-1].otherwise is None:
            stack[-1].branches.append((text[8:].strip(), []))
        elif text == "else" and stack[-1].kind == "if" and stack[-1].otherwise is None:
            stack[-1].otherwise = []
        elif text == "end" and len(stack) > 1:
            stack.pop()
        elif text.startswith(("if", "range", "else", "end", "with", "define", "template", "block")):
            raise GoTemplateError(f"unsupported or misplaced action {{{{ {text} }}}}")
        else:
            body().append(("output", text))
    if len(stack) != 1:
        raise GoTemplateError("an action is missing its {{ end }}")
    return root


def _run(nodes: list[Any], dot: Any, scope: dict[str, Any], out: list[str]) -> None:
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, tuple):
            value = _eval(node[1], dot, scope)
            out.append("" if value is None else str(value))
        elif node.kind == "range":
            names = RANGE_VARIABLES.match(node.expr)
            expr = names.group(3) if names else node.expr
            for index, item in enumerate(_eval(expr, dot, scope) or []):
                inner = dict(scope)
                if names:   # Go: one variable is the element; two are the index and the element
                    inner.update({names.group(1): item} if not names.group(2)
                                 else {names.group(1): index, names.group(2): item})
                _run(node.body, item, inner, out)
        else:
            for condition, branch in node.branches:
                if _truthy(_eval(condition, dot, scope)):
                    _run(branch, dot, scope, out)
                    break
            else:
                _run(node.otherwise or [], dot, scope, out)


def _eval(expression: str, dot: Any, scope: dict[str, Any]) -> Any:
    tokens = TOKEN.findall(expression)
    value, rest = _command(tokens, dot, scope)
    if rest:
        raise GoTemplateError(f"cannot read {expression!r}")
    return value


def _command(tokens: list[str], dot: Any, scope: dict[str, Any]) -> tuple[Any, list[str]]:
    args: list[Any] = []
    while tokens and tokens[0] != ")":
        head, tokens = tokens[0], tokens[1:]
        if head == "(":
            value, tokens = _command(tokens, dot, scope)
            if not tokens or tokens[0] != ")":
                raise GoTemplateError("unbalanced parentheses")
            tokens = tokens[1:]
            args.append(value)
        else:
            args.append(_operand(head, dot, scope))
    if not args:
        raise GoTemplateError("empty expression")
    function, rest = args[0], args[1:]
    if callable(function):
        return function(*rest), tokens
    if rest:
        raise GoTemplateError("a value cannot take arguments")
    return function, tokens


FUNCTIONS: dict[str, Any] = {
    "eq": lambda a, *b: any(a == x for x in b),
    "ne": lambda a, b: a != b,
    "not": lambda a: not _truthy(a),
    "or": lambda *a: next((x for x in a if _truthy(x)), a[-1]),
    "and": lambda *a: next((x for x in a if not _truthy(x)), a[-1]),
}


def _operand(token: str, dot: Any, scope: dict[str, Any]) -> Any:
    if token.startswith('"'):
        return token[1:-1].encode().decode("unicode_escape")
    if token.isdigit():
        return int(token)
    if token in FUNCTIONS:
        return FUNCTIONS[token]
    if token == ".":
        return dot
    if token.startswith("$"):
        name, _, path = token.partition(".")
        if name not in scope:
            raise GoTemplateError(f"undefined variable {name}")
        value = scope[name]
    elif token.startswith("."):
        value, path = dot, token[1:]
    else:
        raise GoTemplateError(f"unsupported operand {token!r}")
    for name in path.split(".") if path else []:
        value = value.get(name) if isinstance(value, dict) else None
    return value


def _truthy(value: Any) -> bool:
    return bool(value)
