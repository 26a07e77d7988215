"""Command line for the fake-face site: ``python -m diffkit.fakesite --port 8000 [knobs]``."""

from __future__ import annotations

import argparse
import signal
import threading

from diffkit.fakesite.site import FAULT_KINDS, FaceSite, SiteConfig


def _parse_fault(text: str) -> tuple[str, float]:
    kind, sep, rate = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--fault wants KIND=RATE, got {text!r}")
    if kind not in FAULT_KINDS:
        raise argparse.ArgumentTypeError(f"unknown fault {kind!r}; known: {', '.join(FAULT_KINDS)}")
    try:
        return kind, float(rate)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"fault rate must be a number, got {rate!r}") from error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m diffkit.fakesite",
        description="Serve procedural fake faces like thispersondoesnotexist.com, on this machine.",
        epilog="Example: python -m diffkit.fakesite --port 8000 --repeat-rate 0.05 --fault http_503=0.02")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port (default 8000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality")
    parser.add_argument("--image-path", default="/random-person.jpeg")
    parser.add_argument("--repeat-rate", type=float, default=0.0)
    parser.add_argument("--near-dup-rate", type=float, default=0.0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to each response")
    parser.add_argument("--max-rps", type=float, default=None, help="answer 429 above this request rate")
    parser.add_argument("--retry-after", type=float, default=1.0, help="Retry-After seconds on 429/503")
    parser.add_argument("--retry-after-http-date", action="store_true")
    parser.add_argument("--retry-after-text", default=None,
                        help="hostile: send this text verbatim as Retry-After (e.g. '²')")
    parser.add_argument("--fault", type=_parse_fault, action="append", default=[], metavar="KIND=RATE",
                        help=f"repeatable; kinds: {', '.join(FAULT_KINDS)}")
    parser.add_argument("--stall", type=float, default=30.0, help="seconds a 'stall' response hangs")
    parser.add_argument("--verbose", action="store_true", help="log each request to stderr")
    args = parser.parse_args(argv)
    try:
        config = SiteConfig(seed=args.seed, size=args.size, jpeg_quality=args.quality,
                            image_path=args.image_path, repeat_rate=args.repeat_rate,
                            near_dup_rate=args.near_dup_rate, latency_s=args.latency, max_rps=args.max_rps,
                            retry_after_s=args.retry_after, retry_after_http_date=args.retry_after_http_date,
                            retry_after_text=args.retry_after_text,
                            faults=dict(args.fault), stall_s=args.stall)
    except ValueError as error:
        parser.error(str(error))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        site = FaceSite(config, host=args.host, port=args.port, verbose=args.verbose).start()
    except OSError as error:  # port taken, host not local...
        parser.exit(2, f"cannot listen on {args.host}:{args.port}: {error}; try --port 0 for a free port\n")
    print(f"Serving fake faces at {site.url} (landing page {site.base_url}/); Ctrl-C to stop", flush=True)
    try:
        while not stop.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        site.stop()
    print(f"Stopped. Served: {site.served()}", flush=True)
    return 0

