"""The workflow's expressions: `${{ ... }}`, `if:` and `timeout-minutes`, in the
subset the workflows use: literals, context paths, == != ! && || ( ), always()
success() failure() cancelled() hashFiles(...) fromJSON(...)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable

from .common import CheckError

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?)|(?P<op>==|!=|&&|\|\||[!(),])"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_\-]*(?:\.[A-Za-z0-9_\-*]+)*))"
)


def _tokens(expr: str) -> list[tuple[str, str]]:
    out, pos, expr = [], 0, expr.strip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise CheckError(f"expression {expr!r}: cannot read {expr[pos:]!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(expr) and expr[pos].isspace():
            pos += 1
    return out


@dataclass
class Context:
    values: dict[str, Any]  # matrix, steps, github, runner, env
    status: str = "success"  # the job's so far: success | failure | cancelled
    hash_files: Callable[[list[str]], str] = lambda patterns: ""

    def lookup(self, path: str) -> Any:
        node: Any = self.values
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node


def truthy(v: Any) -> bool:
    return v not in (None, False, 0, "", 0.0)


def evaluate(expr: str, ctx: Context) -> Any:
    toks, i = _tokens(expr), 0

    def peek() -> str:
        return toks[i][1] if i < len(toks) else ""

    def take() -> tuple[str, str]:
        nonlocal i
        if i >= len(toks):
            raise CheckError(f"expression {expr!r} ends early")
        i += 1
        return toks[i - 1]

    def or_() -> Any:
        v = and_()
        while peek() == "||":
            take()
            rhs = and_()
            v = v if truthy(v) else rhs
        return v

    def and_() -> Any:
        v = cmp()
        while peek() == "&&":
            take()
            rhs = cmp()
            v = rhs if truthy(v) else v
        return v

    def cmp() -> Any:
        v = unary()
        while peek() in ("==", "!="):
            op = take()[1]
            rhs = unary()
            same = (str(v).lower() == str(rhs).lower()) if isinstance(v, str) and isinstance(rhs, str) else v == rhs
            v = same if op == "==" else not same
        return v

    def unary() -> Any:
        if peek() == "!":
            take()
            return not truthy(unary())
        return atom()

    def atom() -> Any:
        kind, text = take()
        if text == "(":
            v = or_()
            if take()[1] != ")":
                raise CheckError(f"expression {expr!r}: ')' expected")
            return v
        if kind == "str":
            return text[1:-1].replace("''", "'")
        if kind == "num":
            return float(text) if "." in text else int(text)
        if kind == "name" and text in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[text]
        if kind == "name" and peek() == "(":
            take()
            args = []
            while peek() != ")":
                args.append(or_())
                if peek() == ",":
                    take()
            take()
            return call(text, args)
        if kind == "name":
            return ctx.lookup(text)
        raise CheckError(f"expression {expr!r}: unexpected {text!r}")

    def call(name: str, args: list[Any]) -> Any:
        status = {
            "always": lambda: True,
            "success": lambda: ctx.status == "success",
            "failure": lambda: ctx.status == "failure",
            "cancelled": lambda: ctx.status == "cancelled",
        }
        if name in status:
            return status[name]()
        if name == "hashFiles":
            return ctx.hash_files([str(a) for a in args])
        if name == "fromJSON" and len(args) == 1:
            return json.loads(str(args[0]))
        raise CheckError(f"expression {expr!r}: no stand-in for {name}()")

    v = or_()
    if i != len(toks):
        raise CheckError(f"expression {expr!r}: unexpected {peek()!r}")
    return v


_EXPR = re.compile(r"\$\{\{(.*?)\}\}", re.S)


def interpolate(text: Any, ctx: Context) -> str:
    def one(m: re.Match[str]) -> str:
        v = evaluate(m.group(1), ctx)
        return "" if v is None else ("true" if v is True else "false" if v is False else str(v))

    return _EXPR.sub(one, str(text))


def value_of(field_: Any, ctx: Context) -> Any:
    """A field that is one whole ${{ }} keeps its type (timeout-minutes)."""
    if isinstance(field_, str):
        m = _EXPR.fullmatch(field_.strip())
        if m:
            return evaluate(m.group(1), ctx)
        return interpolate(field_, ctx)
    return field_


def should_run(cond: Any, ctx: Context) -> bool:
    """A step's `if:`; without a status function Actions adds success() &&."""
    if cond is None:
        return ctx.status == "success"
    text = str(cond).strip()
    m = _EXPR.fullmatch(text)
    if m:
        text = m.group(1)
    if not re.search(r"\b(always|success|failure|cancelled)\s*\(", text):
        text = f"success() && ({text})"
    return truthy(evaluate(text, ctx))
