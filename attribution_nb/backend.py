"""Where traces run: here (``LocalBackend``) or on an nnsight server (``RemoteBackend``).

The backend is chosen once, when a :class:`~attribution_nb.ReplacementModel` is built; the
rest of the package asks it to open traces and sessions and to run functions *where the
model is*, and never asks whether it is remote.

What a remote request may carry (the rule both backends keep, so that local runs exercise it
too): the functions of this package it calls (sent by value, see :func:`ship_code`), the
nnsight envoy, the :class:`~attribution_nb.architectures.Architecture`, plain tensors (a
slimmed capture, skip matrices, the active features' decoder rows) — never the
``ReplacementModel`` nor the transcoder set.  Inside a request, operands are moved to the
model's device with :func:`to_device`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import nnsight
import torch

PACKAGE = __name__.rpartition(".")[0]


def ship_code() -> None:
    """Have nnsight send this package's code with remote requests (by value: a server runs
    the functions a trace calls, and has numpy, torch and nnsight but not attribution_nb)."""
    nnsight.register(PACKAGE)


def model_device(envoy) -> torch.device:
    """The device of the model's weights (inside a remote request: the server's)."""
    return next(envoy._module.parameters()).device


def to_device(value: Any, device: torch.device | str) -> Any:
    """``value`` with every tensor in it (lists, tuples, dicts, None kept) moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device) for v in value)
    return value


class LocalBackend:
    """Traces run in this process, on the model's own device."""

    name = "local"

    def trace(self, envoy, *inputs):
        return envoy.trace(*inputs)

    def session(self, envoy):
        return envoy.session()

    def run(self, envoy, fn: Callable, *args) -> Any:
        """``fn(*args)`` where the model is: here, a plain call."""
        return fn(*args)

    def requests(self, jobs: Sequence) -> list[list]:
        """How to group jobs into requests: one at a time here (the progress bar moves)."""
        return [[job] for job in jobs]

    def request_done(self, state) -> None:
        """After a request ran on ``state``: here it ran on the object itself; nothing to undo."""

    def prepare(self, state) -> None:
        """Before the first request: here, trace ahead (``state.retrace``), so the trace is timed alone."""
        state.retrace(state.T)


class RemoteBackend(LocalBackend):
    """Traces run on an nnsight server: NDIF (``True``), another server (a URL), or
    nnsight's local simulation (``"local"``: each request serialized and run as a server would)."""

    def __init__(self, where: bool | str):
        self.where = where
        self.name = f"remote={where!r}"

    def trace(self, envoy, *inputs):
        ship_code()
        return envoy.trace(*inputs, remote=self.where)

    def session(self, envoy):
        ship_code()
        return envoy.session(remote=self.where)

    def run(self, envoy, fn: Callable, *args) -> Any:
        """``fn(*args)`` inside one session on the server; its result comes back."""
        with self.session(envoy):
            result = nnsight.save(fn(*args))
        return result

    def requests(self, jobs: Sequence) -> list[list]:
        """All jobs in one request (one round trip)."""
        return [list(jobs)] if len(jobs) else []

    def request_done(self, state) -> None:
        """What a request traced lives on the server (nnsight's simulation may have run it on
        ``state`` itself): drop it here."""
        state.forget_trace()

    def prepare(self, state) -> None:
        """Nothing: a remote model traces on the server, inside each request."""


def backend_for(remote: bool | str) -> LocalBackend:
    """The backend for ``remote`` (``False``: local; ``True``, ``"local"`` or a URL: remote)."""
    if remote is False:
        return LocalBackend()
    if remote is True or isinstance(remote, str):
        return RemoteBackend(remote)
    raise ValueError(f"remote must be False, True, 'local' or a server URL, got {remote!r}")
