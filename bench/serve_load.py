"""Bounded load test of `tunesmith serve` on loopback: concurrent chat completions and
fine-tuning job listings through the official `openai` client.

    python bench/serve_load.py                       # 8 chat + 8 listing clients, 64 + 800 requests
    python bench/serve_load.py --chat-requests 16 --list-requests 200 --seconds 60
    python bench/serve_load.py --model-path ~/.tunesmith/base_models/smollm2-135m-instruct/hf
    python bench/serve_load.py --src /tmp/old/src     # the same load on another tree's server

A fresh server (own temporary TUNESMITH_HOME, no worker) is started on a free loopback
port; `--jobs` queued jobs are recorded so listings page through real rows. Every client
stops after its share of requests or at the time limit, whichever comes first, and the
server is stopped. Prints a Markdown table; `--output` also keeps the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ["Where is my order?", "How do I reset my password?", "Can I return a gift?",
             "Do you ship abroad?"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tree_env(home: Path, src: Path) -> dict[str, str]:
    """The environment of every tunesmith process of the run: the temporary home, and `src`
    first on the path, so the server, the job records and the model registration all come
    from the tree under test."""
    env = {**os.environ, "TUNESMITH_HOME": str(home),
           "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("TUNESMITH_DATABASE_URL", None)
    return env


def start_server(env: dict[str, str], home: Path, port: int, concurrency: int,
                 engine_threads: int | None) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "tunesmith", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--no-worker", "--max-concurrent-generations", str(concurrency)]
    if engine_threads is not None:  # trees before 8f06f08 have no such option
        command += ["--engine-threads", str(engine_threads)]
    process = subprocess.Popen(command, env=env, stdout=(home / "server.log").open("wb"),
                               stderr=subprocess.STDOUT)
    import httpx

    deadline = time.monotonic() + 300  # a loaded machine under nice starts slowly
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"server did not start: {(home / 'server.log').read_text()[-2000:]}")


SEED_JOBS = """
import sys
from pathlib import Path
from tunesmith.store import open_registry
registry = open_registry(home=Path(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    registry.create_job({"base_model": "tunesmith/tiny-chat"}, status="queued")
registry.close()
"""


def seed_jobs(env: dict[str, str], home: Path, count: int) -> None:
    """Queued job rows for the listings, written by the tree under test (its own schema)."""
    subprocess.run([sys.executable, "-c", SEED_JOBS, str(home), str(count)], env=env, check=True)


REGISTER_MODEL = """
import sys
from pathlib import Path
from tunesmith.store import open_registry
registry = open_registry(home=Path(sys.argv[1]))
print(registry.add_model(base_model=sys.argv[2], kind="full", path=sys.argv[2], recipe={}).id)
registry.close()
"""


def register_model(env: dict[str, str], home: Path, path: Path) -> str:
    """A local model folder recorded as a fully fine-tuned model; its id is the name the chat
    clients ask for. Every server version serves a registry's full models (operator-registered
    base names came later), so old and new trees load the same folder the same way."""
    done = subprocess.run([sys.executable, "-c", REGISTER_MODEL, str(home), str(path)], env=env, check=True,
                          capture_output=True, text=True)
    return done.stdout.strip().splitlines()[-1]


def machine() -> str:
    """The CPU's model name (lscpu), for the record."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return "unknown"
    names = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")]
    return names[0] if names else "unknown"


def run_clients(kind: str, clients: int, requests: int, deadline: float, call: Any) -> dict[str, Any]:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    remaining = [requests]

    def client() -> None:
        while time.monotonic() < deadline:
            with lock:
                if remaining[0] <= 0:
                    return
                remaining[0] -= 1
            started = time.perf_counter()
            try:
                call()
            except Exception as exc:  # counted, not fatal: a load test reports failures
                with lock:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            with lock:
                latencies.append(time.perf_counter() - started)

    begun = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - begun
    ordered = sorted(latencies)

    def pct(p: float) -> float | None:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else None

    return {"kind": kind, "clients": clients, "ok": len(latencies), "errors": errors, "wall_s": wall,
            "per_s": len(latencies) / wall if wall else 0.0, "p50_s": pct(0.5), "p95_s": pct(0.95),
            "max_s": ordered[-1] if ordered else None,
            "mean_s": statistics.fmean(latencies) if latencies else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chat-clients", type=int, default=8)
    parser.add_argument("--chat-requests", type=int, default=64)
    parser.add_argument("--list-clients", type=int, default=8)
    parser.add_argument("--list-requests", type=int, default=800)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--concurrent-generations", type=int, default=8,
                        help="the server's cap (default: the server's own default, 8)")
    parser.add_argument("--engine-threads", type=int,
                        help="the engine's torch threads (default: the server's own choice)")
    parser.add_argument("--jobs", type=int, default=200, help="queued jobs recorded for the listings")
    parser.add_argument("--seconds", type=float, default=180, help="hard time limit for the load phase")
    parser.add_argument("--output", type=Path, help="also write the results as JSON here")
    parser.add_argument("--model", default="tunesmith/tiny-chat", help="the model the chat clients ask for")
    parser.add_argument("--model-path", type=Path,
                        help="instead of --model: a local Hugging Face model folder, recorded in the fresh "
                             "registry as a full model and asked for by its id")
    parser.add_argument("--src", type=Path, default=ROOT / "src",
                        help="the source tree whose server is measured (default: this checkout's)")
    args = parser.parse_args()

    import openai

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="tunesmith-bench-") as folder:
        home = Path(folder)
        env = tree_env(home, args.src.resolve())
        seed_jobs(env, home, args.jobs)
        model = args.model
        if args.model_path is not None:
            model = register_model(env, home, args.model_path.expanduser().resolve())
        port = free_port()
        server = start_server(env, home, port, args.concurrent_generations, args.engine_threads)
        try:
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="bench", max_retries=0,
                                   timeout=600)
            warm = time.perf_counter()
            client.chat.completions.create(model=model, max_tokens=args.max_tokens,
                                           messages=[{"role": "user", "content": "hello"}], temperature=0)
            load_s = time.perf_counter() - warm
            counter = iter(range(10**9))

            def chat() -> None:
                question = QUESTIONS[next(counter) % len(QUESTIONS)]
                reply = client.chat.completions.create(
                    model=model, max_tokens=args.max_tokens, temperature=0,
                    messages=[{"role": "user", "content": question}])
                assert reply.choices[0].message.content is not None

            def listing() -> None:
                page = client.fine_tuning.jobs.list(limit=20)
                assert len(page.data) == min(20, args.jobs)

            deadline = time.monotonic() + args.seconds
            results: list[dict[str, Any]] = []
            chat_thread = threading.Thread(target=lambda: results.append(
                run_clients("chat completions", args.chat_clients, args.chat_requests, deadline, chat)))
            chat_thread.start()
            results.append(run_clients("job listings", args.list_clients, args.list_requests, deadline,
                                       listing))
            chat_thread.join()
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
    load_after = os.getloadavg()
    served = str(args.model_path or args.model)
    summary = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(), "cpu": machine(),
               "src": str(args.src.resolve()), "model": served, "first_chat_with_load_s": load_s,
               "max_tokens": args.max_tokens, "concurrent_generations": args.concurrent_generations,
               "engine_threads": args.engine_threads,
               "load_average_before": load_before, "load_average_after": load_after, "results": results}
    print(f"{args.src.resolve()}, {served}: first chat (loads the model): {load_s:.1f} s; "
          f"max_tokens={args.max_tokens}, generation cap {args.concurrent_generations}, "
          f"{os.cpu_count()} CPUs "
          f"({machine()}); load average {load_before[0]:.1f} before, {load_after[0]:.1f} after\n")
    print("| load | clients | ok | errors | wall s | req/s | p50 s | p95 s | max s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        errors = sum(r["errors"].values())
        print(f"| {r['kind']} | {r['clients']} | {r['ok']} | {errors} | {r['wall_s']:.1f} | "
              f"{r['per_s']:.1f} | {_f(r['p50_s'])} | {_f(r['p95_s'])} | {_f(r['max_s'])} |")
    if args.output:
        args.output.write_text(json.dumps(summary, indent=1))
    return 0


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())
