"""Run one vendor server in the foreground, e.g. for a benchmark in another process::

python -m tests.vendors openai --port 8100 --tokens 500 --fast
"""

from __future__ import annotations

import argparse
import time

from tests.vendors import SERVERS, Behaviour


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.vendors")
    parser.add_argument("vendor", choices=sorted(SERVERS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tokens", type=int, default=0, help="stream N tokens (0: a sentence)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each token")
    parser.add_argument("--fast", action="store_true", help="pre-encode and send back to back")
    args = parser.parse_args()

    if args.tokens:
        behaviour = Behaviour.many(args.tokens, fast=args.fast, delay=args.delay)
    else:
        behaviour = Behaviour(fast=args.fast, delay=args.delay)
    server = SERVERS[args.vendor](behaviour, host=args.host, port=args.port)
    with server:
        print(f"{args.vendor} server: base URL {server.base_url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
