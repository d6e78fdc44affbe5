"""The platform the programs being built will run on, by which layers choose how to compute.

It is jax's default backend, except while a program is built ahead of time for another one:
the fit check (fgjax/fit.py) compiles TPU programs on a CPU host, and they must get a TPU's
choices (the splash attention kernel, no CPU-only mixed products), not the host's.

    with platform.compiling_for("tpu"):
        compiled = jax.jit(step).lower(...).compile()   # built and traced for a TPU
"""

from __future__ import annotations

import contextlib
import contextvars

import jax

_TARGET: contextvars.ContextVar[str | None] = contextvars.ContextVar("fgjax_target", default=None)
PLATFORMS = ("cpu", "gpu", "tpu")


def target() -> str:
    """"cpu", "gpu" or "tpu": the platform of the programs being built now."""
    return _TARGET.get() or jax.default_backend()


@contextlib.contextmanager
def compiling_for(name: str):
    """Models built and traced inside take `name`'s choices, whatever jax's backend is."""
    if name not in PLATFORMS:
        raise ValueError(f"unknown platform {name!r}; one of {PLATFORMS}")
    token = _TARGET.set(name)
    try:
        yield
    finally:
        _TARGET.reset(token)
