"""The claim registry: one list of claims that the CLI, the tests and the book all read (CONTRIBUTING.md).

A :class:`Claim` is data: an id, its paper, a statement, a kind, the subject it is about
(the callable that ``--impl`` replaces), the conventions it judges apart, the dtypes and devices
it applies to, a check that returns :class:`Evidence`, and the planted-bug :class:`Mutant`
implementations the check must reject.
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch

from attnverify.evidence import Convention, Evidence, Recorder

__all__ = [
    "ALL_DTYPES",
    "BUDGETS",
    "DEVICES",
    "IMPL_DTYPES",
    "KINDS",
    "PAPER_MODULES",
    "CheckContext",
    "Claim",
    "Convention",
    "Implementation",
    "Mutant",
    "Paper",
    "Subject",
    "claims",
    "dtype_name",
    "get",
    "pair_name",
    "select",
]

Kind = Literal["symbolic", "identity", "approximation", "statistical"]
Budget = Literal["default", "thorough"]
KINDS: tuple[Kind, ...] = ("symbolic", "identity", "approximation", "statistical")
BUDGETS: tuple[Budget, ...] = ("default", "thorough")
ALL_DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)
DEVICES = ("cpu", "cuda")
IMPL_DTYPES = (torch.float64, torch.float32)
"""The dtypes a replaced implementation (``--impl``, a mutant) runs in unless others are requested."""

PAPER_MODULES = (
    "attnverify.theory.aaren",
    "attnverify.theory.sequence_parallel",
    "attnverify.theory.mpnn_vn",
    "attnverify.theory.dsf",
    "attnverify.theory.lla",
    "attnverify.theory.rfa",
)
"""Modules that define ``CLAIMS``; a new paper adds its module here."""


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``"float32"``."""
    return str(dtype).removeprefix("torch.")


def pair_name(label: str, dtype: torch.dtype) -> str:
    """The name of an (implementation, dtype) pair: ``"fast torch [float32]"``; findings start with it."""
    return f"{label} [{dtype_name(dtype)}]"


@dataclass(frozen=True)
class Paper:
    """A paper a claim comes from."""

    key: str
    title: str
    authors: str
    year: int
    arxiv: str

    @property
    def url(self) -> str:
        return f"https://arxiv.org/abs/{self.arxiv}"


@dataclass(frozen=True)
class Implementation:
    """A callable under test, with the dtypes its check runs it in."""

    label: str
    fn: Callable[..., Any]
    dtypes: tuple[torch.dtype, ...] = (torch.float64, torch.float32)
    device: str | None = None
    """Pinned device (references run on the CPU); ``None`` follows the check's device."""


@dataclass(frozen=True)
class Subject:
    """What a claim is about: the callable that ``--impl`` replaces, and our implementations of it."""

    name: str
    signature: str
    implementations: Callable[[torch.device], tuple[Implementation, ...]]
    """Our implementations to check on a device (a function, so that e.g. Triton joins only on CUDA)."""
    args: tuple[str, ...] | None = None
    """The positional arguments a check passes, by name (``None``: not declared, not checked)."""
    kwargs: tuple[str, ...] = ()
    """The keyword arguments a check may pass."""

    def cannot_call(self, fn: Callable[..., Any]) -> str | None:
        """Why ``fn``'s signature cannot take the subject's arguments (``None`` when it can, or cannot tell)."""
        if self.args is None:
            return None
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError):  # builtins without a signature: the checks will tell
            return None
        try:
            signature.bind(*self.args, **dict.fromkeys(self.kwargs))
        except TypeError as exc:
            call = ", ".join([*self.args, *(f"{k}=..." for k in self.kwargs)])
            return f"{getattr(fn, '__qualname__', fn)!s}{signature} cannot be called as fn({call}): {exc}"
        return None


@dataclass(frozen=True)
class Mutant:
    """A small, realistic wrong implementation of a subject; every claim listing it must reject it."""

    name: str
    description: str
    fn: Callable[..., Any]
    dtypes: tuple[torch.dtype, ...] | None = None
    """The dtypes the bug shows in (``None``: the claim's defaults for a replaced implementation)."""


@dataclass(frozen=True)
class CheckContext:
    """How a check runs: budget, device, dtypes (``None``: the claim's defaults) and seed."""

    budget: Budget = "default"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtypes: tuple[torch.dtype, ...] | None = None
    seed: int = 0

    def dtypes_for(self, impl: Implementation) -> tuple[torch.dtype, ...]:
        """The dtypes to run ``impl`` in: its own, narrowed to those requested (possibly none)."""
        if self.dtypes is None:
            return impl.dtypes
        return tuple(d for d in impl.dtypes if d in self.dtypes)

    @property
    def thorough(self) -> bool:
        return self.budget == "thorough"


CheckFn = Callable[[Recorder, Sequence[Implementation], CheckContext], None]


@dataclass(frozen=True)
class Claim:
    """One verified statement (CONTRIBUTING.md, "Claims, evidence, mutants")."""

    id: str
    paper: Paper
    kind: Kind
    title: str
    statement: str
    """The statement in LaTeX, in our own formulation."""
    check: CheckFn
    subject: Subject | None = None
    mutants: tuple[Mutant, ...] = ()
    conventions: tuple[Convention, ...] = ()
    """Choices of ours the check judges apart, each by one finding (see :class:`Convention`)."""
    dtypes: tuple[torch.dtype, ...] = ALL_DTYPES
    """The dtypes the claim has cases for; other requested dtypes are "not applicable"."""
    devices: tuple[str, ...] = DEVICES
    """The device types the check can run on."""

    def run(
        self, ctx: CheckContext | None = None, impl: Callable[..., Any] | None = None, label: str = "--impl"
    ) -> Evidence:
        """Run the check on our implementations, or on ``impl`` (named ``label``) in place of the subject.

        The requested pairs are each implementation's dtypes ∩ the requested ∩ the claim's; with
        none (or on a device the claim does not run on) the evidence is "not applicable".
        """
        ctx = ctx or CheckContext()
        if ctx.device.type not in self.devices:
            return Evidence.not_applicable(f"{self.id} runs on {'/'.join(self.devices)}, not {ctx.device.type}")
        asked = ctx.dtypes
        ctx = replace(ctx, dtypes=tuple(d for d in (asked or ALL_DTYPES) if d in self.dtypes))
        if impl is None:
            impls = self.subject.implementations(ctx.device) if self.subject else ()
        else:
            if self.subject is None:
                raise ValueError(f"claim {self.id} has no subject that an implementation could replace")
            impls = (Implementation(label, impl, tuple(d for d in (asked or IMPL_DTYPES) if d in self.dtypes)),)
        pairs = [pair_name(i.label, d) for i in impls for d in ctx.dtypes_for(i)]
        requested = ", ".join(dtype_name(d) for d in asked or ()) or "defaults"
        if not ctx.dtypes:
            return Evidence.not_applicable(
                f"no case for the requested dtypes ({requested}); {self.id} applies to "
                f"{', '.join(dtype_name(d) for d in self.dtypes)}"
            )
        if impls and not pairs:
            runs = "; ".join(f"{i.label}: {', '.join(dtype_name(d) for d in i.dtypes)}" for i in impls)
            return Evidence.not_applicable(f"no implementation runs in the requested dtypes ({requested}) ({runs})")
        recorder = Recorder(pairs)
        recorder.notes["implementations"] = [i.label for i in impls]
        self.check(recorder, impls, ctx)
        return recorder.evidence()

    def run_mutant(self, mutant: Mutant, ctx: CheckContext | None = None) -> Evidence:
        """Run the check with ``mutant`` as the implementation (it must not hold)."""
        ctx = ctx or CheckContext()
        if mutant.dtypes is not None:
            ctx = replace(ctx, dtypes=mutant.dtypes)
        return self.run(ctx, impl=mutant.fn)


def claims() -> tuple[Claim, ...]:
    """Every registered claim, in paper-module order."""
    found: list[Claim] = []
    for name in PAPER_MODULES:
        found.extend(importlib.import_module(name).CLAIMS)
    ids = [c.id for c in found]
    if len(set(ids)) != len(ids):
        raise RuntimeError(f"duplicate claim ids in the registry: {sorted(i for i in ids if ids.count(i) > 1)}")
    return tuple(found)


def select(patterns: Sequence[str]) -> tuple[Claim, ...]:
    """Claims whose id matches any glob in ``patterns`` (all claims when empty).

    Raises ``KeyError`` naming a pattern that matches nothing.
    """
    everything = claims()
    if not patterns:
        return everything
    chosen: list[Claim] = []
    for pattern in patterns:
        matched = [c for c in everything if fnmatch.fnmatchcase(c.id, pattern)]
        if not matched:
            raise KeyError(f"no claim matches {pattern!r}; 'attnverify list' shows the ids")
        chosen.extend(c for c in matched if c not in chosen)
    return tuple(chosen)


def get(claim_id: str) -> Claim:
    """The claim with this exact id."""
    for c in claims():
        if c.id == claim_id:
            return c
    raise KeyError(f"unknown claim {claim_id!r}")
