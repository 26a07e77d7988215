"""A pytest fork server for the mutation harness: import the heavy libraries once, fork a child per run.

Importing torch costs ~2.3 s of CPU, most of a mutant's run when its tests take well under a second;
forked from this process, a child starts with torch, numpy and scipy already loaded (but no diffkit
module, so each child imports the mutated copy afresh). This process stays single-threaded, which is what
makes forking it safe.

Protocol (one JSON object per line): the harness writes ``{"root", "argv", "log", "env"}``; this process
forks, answers ``{"pid"}`` at once (the harness kills that process group at its timeout), then
``{"pid", "code"}`` when the child has ended (code -9 when killed).
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported: as tests/conftest.py wants

import numpy  # noqa: E402, F401  (preloaded for the children)
import PIL.Image  # noqa: E402, F401
import pytest  # noqa: E402
import scipy.linalg  # noqa: E402, F401
import scipy.special  # noqa: E402, F401
import scipy.stats  # noqa: E402, F401
import torch  # noqa: E402, F401


def child(request: dict[str, object]) -> None:
    """Run pytest in the forked child; never returns."""
    code = 3
    try:
        os.setsid()  # its own process group: a timeout kills it with every subprocess it started
        log = os.open(str(request["log"]), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        root = str(request["root"])
        os.chdir(root)
        os.environ.update({str(k): str(v) for k, v in dict(request["env"]).items()})  # type: ignore[arg-type]
        sys.path.insert(0, root)
        sys.dont_write_bytecode = True  # see run.py: no stale .pyc of a mutant
        sys.argv = ["pytest", *map(str, request["argv"])]  # type: ignore[arg-type]
        code = int(pytest.main(list(sys.argv[1:])))
    except BaseException as error:  # noqa: BLE001  (anything: the harness reads the log)
        print(f"zygote child failed: {error!r}", file=sys.stderr)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            child(request)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"pid": pid, "code": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    main()
