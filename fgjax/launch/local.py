"""Run one command as N cooperating JAX processes on this machine (localhost coordinator).

    python -m fgjax.launch.local --num_processes=2 [--devices_per_process=2] [--dry_run] \\
        -- python -m fgjax.main --config=... --workdir=...

Each process gets FGJAX_COORDINATOR / FGJAX_NUM_PROCESSES / FGJAX_PROCESS_ID (read by
`fgjax.distributed.initialize`) and, on CPU, its own number of fake devices. Output of process
i is prefixed with "[i]". The launcher exits with the first non-zero exit status and stops the
other processes then, so a failed worker never leaves the rest hanging in a collective.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import threading
import time

from fgjax import distributed


def free_port() -> int:
    import portpicker

    return portpicker.pick_unused_port()


def process_env(i: int, n: int, port: int, devices: int | None, base: dict | None = None) -> dict:
    env = dict(os.environ if base is None else base)
    env.update({
        distributed.ENV_COORDINATOR: f"127.0.0.1:{port}",
        distributed.ENV_NUM_PROCESSES: str(n),
        distributed.ENV_PROCESS_ID: str(i),
        "PYTHONUNBUFFERED": "1",
    })  # fmt: skip
    if devices:
        env[distributed.ENV_LOCAL_DEVICES] = str(devices)
    return env


def commands(argv: list[str], n: int, port: int, devices: int | None) -> list[str]:
    """The exact shell commands the launcher runs, one per process."""
    out = []
    for i in range(n):
        env = process_env(i, n, port, devices, base={})
        prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        out.append(f"{prefix} {shlex.join(argv)}")
    return out


def run(
    argv: list[str], n: int, *, devices: int | None = None, timeout: float | None = None
) -> int:
    port = free_port()
    procs = [
        subprocess.Popen(
            argv,
            env=process_env(i, n, port, devices),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(n)
    ]
    threads = [
        threading.Thread(target=_relay, args=(i, p), daemon=True) for i, p in enumerate(procs)
    ]
    for t in threads:
        t.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    status = 0
    while any(p.poll() is None for p in procs):
        failed = [p.returncode for p in procs if p.returncode not in (None, 0)]
        expired = deadline is not None and time.monotonic() > deadline
        if failed or expired:
            status = failed[0] if failed else 124
            for p in procs:
                if p.poll() is None:
                    p.kill()
            break
        time.sleep(0.1)
    for t in threads:
        t.join(timeout=5)
    return status or next((p.returncode for p in procs if p.returncode), 0)


def _relay(i: int, proc: subprocess.Popen) -> None:
    for line in proc.stdout:
        sys.stdout.write(f"[{i}] {line}")
        sys.stdout.flush()


def main(args: list[str] | None = None) -> int:
    args = sys.argv[1:] if args is None else args
    if "--" not in args:
        raise SystemExit(
            "usage: python -m fgjax.launch.local --num_processes=N [...] -- COMMAND ..."
        )
    split = args.index("--")
    parser = argparse.ArgumentParser(prog="fgjax.launch.local")
    parser.add_argument("--num_processes", type=int, default=2)
    parser.add_argument(
        "--devices_per_process", type=int, default=None, help="fake CPU devices per process"
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds before all processes are killed"
    )
    parser.add_argument("--dry_run", action="store_true", help="print the commands and exit")
    opts = parser.parse_args(args[:split])
    command = args[split + 1 :]
    if opts.dry_run:
        for line in commands(command, opts.num_processes, 0, opts.devices_per_process):
            print(line.replace("127.0.0.1:0", "127.0.0.1:<free port>"))
        return 0
    return run(command, opts.num_processes, devices=opts.devices_per_process, timeout=opts.timeout)


if __name__ == "__main__":
    sys.exit(main())
