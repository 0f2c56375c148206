"""`tunesmith chat RUN_DIR|MODEL`: talk to a tuned model, tokens streamed as they come."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("chat", help="chat with a tuned (or base) model",
                                   description="Interactive chat; an empty line or Ctrl-D quits. After "
                                               "the model calls tools, each next line is one call's result.")
    parser.add_argument("model", help="run directory, adapter folder, registered model name/id/alias "
                                      "(name@label), or a base model")
    parser.add_argument("--system", help="system message to start the conversation with")
    parser.add_argument("--tools", metavar="FILE",
                        help="JSON file: a list of tools in OpenAI's shape (or {\"tools\": [...]})")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--message", "-m", action="append", default=[],
                        help="send this message instead of reading from the terminal (repeatable)")
    parser.set_defaults(handler=run)


def read_tools(path: Path) -> list[dict[str, Any]]:
    """The tools of a --tools file, checked: each {"type": "function", "function": {"name", ...}}."""
    from tunesmith.errors import TunesmithError

    fix = 'write [{"type": "function", "function": {"name": "...", "parameters": {...}}}]'
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TunesmithError(f"cannot read {path}: {exc.strerror}", fix="check the path") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TunesmithError(f"{path} is not JSON ({exc})", fix=fix) from None
    tools = value.get("tools") if isinstance(value, dict) else value
    if not isinstance(tools, list) or not tools:
        raise TunesmithError(f"{path}: expected a non-empty list of tools", fix=fix)
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not (isinstance(tool, dict) and tool.get("type") == "function" and isinstance(function, dict)
                and isinstance(function.get("name"), str) and function["name"]):
            raise TunesmithError(f"{path}: tools[{index}] is not a function tool with a name", fix=fix)
    return tools


def run(args: argparse.Namespace) -> int:
    from tunesmith.commands.console import console
    from tunesmith.model.generation import Sampling, stream
    from tunesmith.model.inference import load_trained
    from tunesmith.model.targets import resolve_target
    from tunesmith.model.tool_calls import parse_tool_calls

    tools = read_tools(Path(args.tools)) if args.tools else None
    names = {t["function"]["name"] for t in tools or []}
    target, _ = resolve_target(args.model, bases=True)
    loaded = load_trained(target)
    messages: list[dict[str, Any]] = [{"role": "system", "content": args.system}] if args.system else []
    scripted = list(args.message)
    pending: list[dict[str, Any]] = []  # tool calls still waiting for their result
    if not scripted:
        console.print(f"[bold]{args.model}[/] — empty line or Ctrl-D to quit", highlight=False)
    while True:
        prompt = f"tool {pending[0]['function']['name']}>" if pending else "you>"
        if scripted:
            text = scripted.pop(0)
            console.print(f"[bold cyan]{prompt}[/] {text}", highlight=False)
        elif args.message:
            return 0
        else:
            try:
                text = console.input(f"[bold cyan]{prompt}[/] ")
            except EOFError:
                return 0
        if not text.strip():
            return 0
        if pending:
            messages.append({"role": "tool", "tool_call_id": pending.pop(0)["id"], "content": text})
            if pending:
                continue
        else:
            messages.append({"role": "user", "content": text})
        console.print("[bold magenta]model>[/] ", end="")
        pieces = []
        sampling = Sampling(max_new_tokens=args.max_tokens, temperature=args.temperature)
        completion = stream(loaded, messages, sampling, tools)
        try:
            for piece in completion:
                pieces.append(piece)
                console.out(piece, end="", highlight=False)
        finally:  # a process that ends while torch still runs in the generation thread aborts
            if not completion.done.is_set():
                completion.cancel()
            if completion.worker is not None:
                completion.worker.join()
        console.print()
        content, calls = parse_tool_calls("".join(pieces), names) if tools else ("".join(pieces), [])
        if calls:
            for call in calls:
                console.print(f"[bold yellow]tool call[/] {call['function']['name']}"
                              f"({call['function']['arguments']})", highlight=False)
            messages.append({"role": "assistant", "content": content or "", "tool_calls": calls})
            pending = list(calls)
        else:
            messages.append({"role": "assistant", "content": "".join(pieces)})
