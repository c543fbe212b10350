"""Peers side by side: StreamForge, LiteLLM's proxy and LangServe in front of one upstream.

Starts the loopback OpenAI server of ``tests.vendors`` (``--tokens N --fast``: N distinct small
content chunks, pre-encoded and sent back to back) and, each as its own server process pointed
at it:

* StreamForge: one uvicorn worker, provider ``openai_compatible``, ``/v1/chat/completions``
  (exactly as ``passthrough.py`` runs it);
* LiteLLM's proxy: its ``litellm`` command with a configuration of one model,
  ``openai/upstream-model`` at the upstream's ``api_base``, ``/v1/chat/completions``;
* LangServe: langchain-openai's ``ChatOpenAI`` at the upstream, served by LangServe at
  ``/chat`` in one uvicorn worker (``_langserve_app.py``), ``POST /chat/stream``.

The client, load and counting are ``passthrough.py``'s: content chunks of each stream (for
LangServe, its ``event: data`` events whose message chunk has content; its stream ends with
``event: end``), a stream that does not deliver all N being an error. Per round, every side
(the upstream read directly too) gets a throughput run (``--clients`` concurrent clients for
``--duration`` seconds) and then a time-to-first-token run (one client, ``--ttft-streams``
streams), the order rotating each round; medians over ``--rounds`` are reported, and each
peer's throughput and time to first token added are compared with StreamForge's.

The peers run from virtual environments of their own, outside the repository and never the
project's: under ``--peers-dir`` (default ``~/.cache/streamforge/peers``), ``litellm/`` and
``langserve/``, each created the first time with ``python -m venv`` and ``pip install
--require-hashes --no-deps -r locks/peers-NAME.txt`` (pinned versions from PyPI; a few
minutes), reused while that lock is unchanged. StreamForge and the upstream run from the
project's environment, the Python running this script.

Run from the repository root::

    python benchmarks/peers.py

It prints a table and then one JSON line with the same numbers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _client import (
    HOST,
    ROOT,
    StreamError,
    free_port,
    load_average,
    start_process,
    stop_server,
    uvicorn_command,
    wait_until_healthy,
)
from passthrough import (
    _CONTENT,
    _EMPTY_CONTENT,
    MAX_TOKENS,
    UPSTREAM_MODEL,
    Framing,
    Results,
    Target,
    _ms,
    add_load_arguments,
    check_load_arguments,
    compare,
    run_rounds,
    start_streamforge,
    start_upstream,
    summarize,
)

PEERS = ("litellm", "langserve")
SIDES = ("direct", "streamforge", *PEERS)
LABELS = {
    "direct": "direct",
    "streamforge": "StreamForge",
    "litellm": "LiteLLM",
    "langserve": "LangServe",
}
# What each peer's environment reports as its version, for the record.
VERSIONS = {
    "litellm": ("litellm",),
    "langserve": ("langserve", "langchain-core", "langchain-openai", "openai"),
}
DEFAULT_PEERS_DIR = Path.home() / ".cache" / "streamforge" / "peers"
STAMP = "peers-lock.sha256"

LITELLM_CONFIG = """\
model_list:
  - model_name: {model}
    litellm_params:
      model: openai/{model}
      api_base: {api_base}
      api_key: unused
general_settings:
  # Loopback, no authentication: as StreamForge runs here with its defaults.
  dangerously_permit_weak_or_unset_master_key: true
"""


# --- LangServe's stream ----------------------------------------------------------------------


def count_langserve(blocks: list[bytes]) -> tuple[int, bool]:
    """Message chunks with content among LangServe's events, and whether ``end`` was one."""
    count = 0
    done = False
    for block in blocks:
        if block.startswith(b"event: data\r\n"):
            if _CONTENT in block and _EMPTY_CONTENT not in block:
                count += 1
        elif block.startswith(b"event: end"):
            done = True
        elif block.startswith(b"event: error"):
            raise StreamError("error event")
    return count, done


# sse-starlette, which LangServe streams with, ends lines with CRLF.
LANGSERVE_SSE = Framing(b"\r\n\r\n", count_langserve)


# --- the peers' environments -----------------------------------------------------------------


def peer_python(peers_dir: Path, name: str) -> Path:
    """The Python of the peer's own virtual environment, made from its lock if need be."""
    lock = ROOT / "locks" / f"peers-{name}.txt"
    venv = peers_dir / name
    python = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    stamp = venv / STAMP
    if python.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return python
    print(f"peers: installing {name} into {venv} from {lock.relative_to(ROOT)}", file=sys.stderr)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = ["install", "--quiet", "--require-hashes", "--no-deps", "-r", str(lock)]
    subprocess.run([str(python), "-m", "pip", *install], check=True)
    stamp.write_text(digest + "\n")
    return python


def peer_versions(python: Path, names: tuple[str, ...]) -> dict[str, str]:
    script = (
        "import importlib.metadata as m, sys\n"
        "print('\\n'.join(m.version(name) for name in sys.argv[1:]))"
    )
    output = subprocess.run(
        [str(python), "-c", script, *names], capture_output=True, text=True, check=True
    ).stdout.split()
    return dict(zip(names, output, strict=True))


# Loopback needs no proxy, whatever the environment names; and nothing of the project's
# environment on the peers' import path.
PEER_ENV = {"NO_PROXY": HOST, "no_proxy": HOST, "PYTHONPATH": ""}


def start_litellm(
    python: Path, port: int, upstream_port: int, work_dir: Path
) -> subprocess.Popen[bytes]:
    config = work_dir / "litellm.yaml"
    api_base = f"http://{HOST}:{upstream_port}/v1"
    config.write_text(LITELLM_CONFIG.format(model=UPSTREAM_MODEL, api_base=api_base))
    env = {
        **PEER_ENV,
        "LITELLM_LOG": "ERROR",  # uvicorn's log level too: no access log
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # the packaged one, not a download
    }
    command = [str(python.parent / "litellm"), "--config", str(config)]
    command += ["--host", HOST, "--port", str(port), "--num_workers", "1"]  # its default
    # Its own directory, so that no .env file is read; it prints a banner.
    return start_process(command, env=env, cwd=work_dir, quiet=True)


def start_langserve(
    python: Path, port: int, upstream_port: int, work_dir: Path
) -> subprocess.Popen[bytes]:
    env = {
        **PEER_ENV,
        "PEERS_UPSTREAM_URL": f"http://{HOST}:{upstream_port}/v1",
        "PEERS_MODEL": UPSTREAM_MODEL,
        "PEERS_MAX_TOKENS": str(MAX_TOKENS),
    }
    command = uvicorn_command("_langserve_app:app", port, python=python)
    command += ["--app-dir", str(Path(__file__).resolve().parent)]
    return start_process(command, env=env, cwd=work_dir, quiet=True)  # it prints a banner


# --- the run ---------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b > 0 else None


def report_round(index: int, rates: Results, ttfts: Results) -> None:
    parts = []
    for name in SIDES:
        rate, first = rates[name][-1], ttfts[name][-1]
        errors = rate["errors"] + first["errors"]
        parts.append(
            f"{LABELS[name]} {rate['chunks_per_s']:,.0f} chunks/s, "
            f"TTFT p50 {_ms(first['ttft_p50_ms'])}, {errors} errors"
        )
    print(f"round {index + 1}: " + "; ".join(parts), file=sys.stderr, flush=True)


def compare_all(rates: Results, ttfts: Results) -> dict[str, Any]:
    summary = {name: summarize(rates[name], ttfts[name]) for name in SIDES}
    versus_direct = {name: compare(rates, ttfts, summary, name, "direct") for name in SIDES[1:]}
    added = {name: versus_direct[name]["ttft_added_p50_ms"] for name in SIDES[1:]}
    streamforge_versus = {}
    for peer in PEERS:
        paired = compare(rates, ttfts, summary, "streamforge", peer)
        streamforge_versus[peer] = {
            # StreamForge's chunks/s over the peer's: above 1, StreamForge streams faster.
            "throughput_ratio": _ratio(
                summary["streamforge"]["chunks_per_s"], summary[peer]["chunks_per_s"]
            ),
            "paired_throughput_ratio": paired["paired_ratio"],
            "paired_throughput_ratio_range": paired["paired_ratio_range"],
            # The time to first token StreamForge adds over what the peer adds: below 1,
            # StreamForge adds less.
            "ttft_added_ratio": _ratio(added["streamforge"], added[peer]),
            "ttft_p50_difference_ms": paired["ttft_added_p50_ms"],
        }
    return {**summary, "versus_direct": versus_direct, "streamforge_versus": streamforge_versus}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    pythons = {name: peer_python(args.peers_dir, name) for name in PEERS}
    versions = {
        name: peer_versions(pythons[name], VERSIONS[name]) for name in PEERS
    }  # before any server starts: each is a process of its own
    ports = {name: free_port() for name in ("upstream", *SIDES[1:])}
    work_dir = Path(tempfile.mkdtemp(prefix="streamforge-peers-"))
    (work_dir / "streamforge").mkdir()
    upstream = start_upstream(ports["upstream"], args.tokens)
    servers: dict[str, subprocess.Popen[bytes]] = {}
    try:
        await wait_until_healthy(upstream, ports["upstream"], "/v1/models")
        servers["streamforge"] = start_streamforge(
            ports["streamforge"], ports["upstream"], str(work_dir / "streamforge")
        )
        servers["litellm"] = start_litellm(
            pythons["litellm"], ports["litellm"], ports["upstream"], work_dir
        )
        servers["langserve"] = start_langserve(
            pythons["langserve"], ports["langserve"], ports["upstream"], work_dir
        )
        health = {"streamforge": "/health", "litellm": "/health/liveliness", "langserve": "/health"}
        for name, process in servers.items():
            await wait_until_healthy(process, ports[name], health[name])
        pids = {
            name: {name: process.pid, "upstream": upstream.pid} for name, process in servers.items()
        }
        targets = [
            Target("direct", ports["upstream"], UPSTREAM_MODEL, {"upstream": upstream.pid}),
            Target("streamforge", ports["streamforge"], "openai_compatible", pids["streamforge"]),
            Target("litellm", ports["litellm"], UPSTREAM_MODEL, pids["litellm"]),
            Target(
                "langserve",
                ports["langserve"],
                UPSTREAM_MODEL,
                pids["langserve"],
                path="/chat/stream",
                payload={"input": "Hello"},
                framing=LANGSERVE_SSE,
            ),
        ]
        load_before = load_average()
        rates, ttfts = await run_rounds(args, targets, report_round)
        load_after = load_average()
        return {
            "benchmark": "peers",
            "tokens": args.tokens,
            "clients": args.clients,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "ttft_streams": args.ttft_streams,
            "keep_alive": not args.fresh_connections,
            "load_before": [round(v, 2) for v in load_before] if load_before else None,
            "load_after": [round(v, 2) for v in load_after] if load_after else None,
            "versions": versions,
            **compare_all(rates, ttfts),
        }
    finally:
        for process in servers.values():
            stop_server(process)
        stop_server(upstream)
        shutil.rmtree(work_dir, ignore_errors=True)


def print_table(report: dict[str, Any]) -> None:
    print()
    print(
        f"  {report['tokens']} content chunks per stream, {report['clients']} clients for "
        f"throughput, {report['rounds']} rounds (medians), "
        f"{'keep-alive' if report['keep_alive'] else 'fresh'} connections"
    )
    versions = ", ".join(f"{n} {v}" for peer in PEERS for n, v in report["versions"][peer].items())
    print(f"  peers: {versions}")
    header = (
        f"  {'':<13}{'chunks/s':>11}{'vs direct':>11}{'TTFT p50':>11}{'added':>11}"
        f"{'TTFT p90':>11}{'errors':>8}  CPU"
    )
    print(header)
    print("  " + "-" * (len(header) + 30))
    for name in SIDES:
        side = report[name]
        versus = report["versus_direct"].get(name)
        ratio = f"{versus['ratio']:>11.3f}" if versus else f"{'':>11}"
        added = f"{versus['ttft_added_p50_ms']:>8.2f} ms" if versus else f"{'':>11}"
        cpu = ", ".join(
            f"{process} {value:.0f} %"
            for process, value in side["cpu_pct"].items()
            if value is not None
        )
        print(
            f"  {LABELS[name]:<13}{side['chunks_per_s']:>11,.0f}{ratio}"
            f"{side['ttft_p50_ms']:>8.2f} ms{added}{side['ttft_p90_ms']:>8.2f} ms"
            f"{side['errors']:>8}  {cpu}"
        )
    print()
    for peer in PEERS:
        versus = report["streamforge_versus"][peer]
        low, high = versus["paired_throughput_ratio_range"]
        added = versus["ttft_added_ratio"]
        print(
            f"  StreamForge / {LABELS[peer]}: throughput {versus['throughput_ratio']:.2f} times "
            f"(per round {low:.2f}-{high:.2f}); time to first token added "
            f"{'n/a' if added is None else f'{added:.3f} times'} "
            f"({report['versus_direct']['streamforge']['ttft_added_p50_ms']:.2f} ms against "
            f"{report['versus_direct'][peer]['ttft_added_p50_ms']:.2f} ms)"
        )
    print()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=(
            "The peers run from their own virtual environments under --peers-dir, created on "
            "first use from locks/peers-litellm.txt and locks/peers-langserve.txt (python -m "
            "venv; pip install --require-hashes --no-deps) and reused while those are "
            "unchanged; StreamForge runs from the Python running this script."
        ),
    )
    add_load_arguments(parser)
    parser.set_defaults(duration=3.0, warmup=2.0, ttft_streams=50, ttft_warmup=5)
    parser.add_argument(
        "--peers-dir",
        type=Path,
        default=DEFAULT_PEERS_DIR,
        help="where the peers' virtual environments are kept (~/.cache/streamforge/peers)",
    )
    args = parser.parse_args(argv)
    check_load_arguments(parser, args)
    return args


def main(argv: list[str] | None = None) -> int:
    from _client import run_async

    args = parse_args(argv)
    try:
        report = run_async(run(args))
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"peers: {exc}", file=sys.stderr)
        return 1
    print_table(report)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
