"""`tunesmith chat RUN_DIR|MODEL`: talk to a tuned model, tokens streamed as they come."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("chat", help="chat with a tuned (or base) model",
                                   description="Interactive chat; an empty line or Ctrl-D quits.")
    parser.add_argument("model", help="run directory, adapter folder or model")
    parser.add_argument("--system", help="system message to start the conversation with")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--message", "-m", action="append", default=[],
                        help="send this message instead of reading from the terminal (repeatable)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tunesmith.commands.console import console
    from tunesmith.model.inference import load_trained, stream_reply

    loaded = load_trained(args.model)
    messages = [{"role": "system", "content": args.system}] if args.system else []
    scripted = list(args.message)
    if not scripted:
        console.print(f"[bold]{args.model}[/] — empty line or Ctrl-D to quit", highlight=False)
    while True:
        if scripted:
            text = scripted.pop(0)
            console.print(f"[bold cyan]you>[/] {text}", highlight=False)
        elif args.message:
            return 0
        else:
            try:
                text = console.input("[bold cyan]you>[/] ")
            except EOFError:
                return 0
        if not text.strip():
            return 0
        messages.append({"role": "user", "content": text})
        console.print("[bold magenta]model>[/] ", end="")
        pieces = []
        for piece in stream_reply(loaded, messages, max_new_tokens=args.max_tokens,
                                  temperature=args.temperature):
            pieces.append(piece)
            console.out(piece, end="", highlight=False)
        console.print()
        messages.append({"role": "assistant", "content": "".join(pieces)})
