"""The ``attnverify`` command line (README.md, "Other commands"): ``list``, ``verify``, ``bench``, ``book``.

Exit codes of ``verify``: 0 when every selected claim holds, 1 when any fails, 2 on bad arguments
(with a one-line message on stderr), 3 when none fails but some are "not applicable" (no case for
the requested dtypes or device).
"""

from __future__ import annotations

import importlib
import json
import math
import os
import platform
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn

import click
import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import attnverify
from attnverify import registry
from attnverify.evidence import Evidence

DTYPES = {registry.dtype_name(d): d for d in registry.ALL_DTYPES}
EXIT_HOLDS, EXIT_FAILS, EXIT_BAD_ARGUMENTS, EXIT_NOT_APPLICABLE = 0, 1, 2, 3


class BadArguments(click.ClickException):
    """A usage error reported on one line, exit code 2."""

    exit_code = 2


def fail(message: str) -> NoReturn:
    raise BadArguments(message)


def load_impl(spec: str) -> Callable[..., Any]:
    """Import ``module:function`` (the function may be a dotted attribute path); must be callable."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        fail(f"--impl: expected 'module:function', got {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)  # like `python -m`, so a user's local module imports
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's to see
        fail(f"--impl: cannot import module {module_name!r}: {type(exc).__name__}: {exc}")
    for part in attr.split("."):
        if not hasattr(obj, part):
            fail(f"--impl: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        fail(f"--impl: {spec!r} is a {type(obj).__name__}, not a callable")
    return obj


def environment(device: torch.device, budget: str, seed: int) -> dict[str, Any]:
    """What the run ran on: versions, machine, device and settings."""
    env: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "attnverify": attnverify.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "budget": budget,
        "seed": seed,
    }
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float as a string (``"nan"``, ``"inf"``, ``"-inf"``): strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    return str(obj)


def evidence_record(claim: registry.Claim, ev: Evidence) -> dict[str, Any]:
    return {
        "id": claim.id,
        "paper": claim.paper.key,
        "kind": claim.kind,
        "verdict": ev.verdict,
        "holds": ev.holds,
        "metric": ev.metric,
        "tolerance": ev.tolerance,
        "cases": ev.cases,
        "symbolic_steps": ev.symbolic_steps,
        "seconds": round(ev.seconds, 4),
        "details": {**ev.details, "findings": [{**asdict(f), "passed": f.passed} for f in ev.findings]},
    }


def exit_code(results: Sequence[Evidence]) -> int:
    """0 all hold, 1 any fails, 3 none fails but some are not applicable."""
    if any(ev.verdict == "fails" for ev in results):
        return EXIT_FAILS
    if any(ev.verdict == "not applicable" for ev in results):
        return EXIT_NOT_APPLICABLE
    return EXIT_HOLDS


def _fmt(x: float) -> str:
    return f"{x:.3g}"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(attnverify.__version__, prog_name="attnverify")
def cli() -> None:
    """attnverify: verify claims about attention mechanisms, against our kernels or yours."""


@cli.command("list")
@click.option("--claim", "claim_id", metavar="ID", help="Show one claim: statement, subject, conventions, mutants.")
def list_claims(claim_id: str | None) -> None:
    """List every claim: id, paper, kind, subject and mutants."""
    if claim_id is not None:
        try:
            _show_claim(registry.get(claim_id))
        except KeyError as exc:
            fail(f"--claim: {exc.args[0]}; 'attnverify list' shows the ids")
        return
    table = Table(title="attnverify claims")
    table.add_column("claim", no_wrap=True)
    for col in ("paper", "kind", "subject (--impl signature)", "mutants"):
        table.add_column(col, overflow="fold")
    conventions: dict[registry.Convention, list[str]] = {}
    for claim in registry.claims():
        subject = f"{claim.subject.name}: {claim.subject.signature}" if claim.subject else "-"
        table.add_row(
            escape(claim.id),
            f"{claim.paper.key} ({claim.paper.arxiv})",
            claim.kind,
            escape(subject),
            str(len(claim.mutants)),
        )
        for convention in claim.conventions:
            conventions.setdefault(convention, []).append(claim.id)
    Console(width=max(120, Console().width)).print(table)
    for convention, ids in conventions.items():
        click.echo(f"convention {convention.name} ({', '.join(ids)}): {convention.description}")
    click.echo("'attnverify list --claim ID' shows one claim in full.")


def _show_claim(claim: registry.Claim) -> None:
    """One claim in full, as plain text (no markup: statements hold brackets)."""
    subject = claim.subject
    lines = [
        f"{claim.id} ({claim.kind}): {claim.title}",
        f"paper: {claim.paper.title}, {claim.paper.authors} ({claim.paper.year}), {claim.paper.url}",
        f"statement: {claim.statement}",
        f"subject (--impl): {f'{subject.name}: {subject.signature}' if subject else '- (none)'}",
        f"applies to: dtypes {', '.join(registry.dtype_name(d) for d in claim.dtypes)}; "
        f"devices {', '.join(claim.devices)}",
        "conventions:" + ("" if claim.conventions else " none"),
        *(f"  - {c.name}: {c.description}" for c in claim.conventions),
        "mutants:" + ("" if claim.mutants else " none"),
        *(f"  - {m.name}: {m.description}" for m in claim.mutants),
    ]
    click.echo("\n".join(lines))


@cli.command()
@click.option("--claim", "patterns", multiple=True, metavar="GLOB", help="Claim ids to run (glob; repeatable).")
@click.option("--impl", "impl_spec", metavar="MODULE:FUNCTION", help="Check this callable in place of the subject.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write evidence as strict JSON (non-finite numbers as the strings nan, inf, -inf).",
)
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]))
@click.option("--budget", default="default", show_default=True, type=click.Choice(registry.BUDGETS))
@click.option("--dtype", "dtypes", multiple=True, type=click.Choice(list(DTYPES)), help="Restrict dtypes (repeatable).")
@click.option("--seed", default=0, show_default=True, type=int)
def verify(
    patterns: Sequence[str],
    impl_spec: str | None,
    json_path: Path | None,
    device: str,
    budget: str,
    dtypes: Sequence[str],
    seed: int,
) -> None:
    """Run the checks of the selected claims and print a verdict table.

    A claim holds only when a numeric case ran for every requested (implementation, dtype) pair.
    Exit codes: 0 every claim holds; 1 some claim fails; 2 bad arguments; 3 none fails but some
    claim is not applicable (no case for the requested dtypes or device).
    """
    try:
        claims = registry.select(patterns)
    except KeyError as exc:
        fail(f"--claim: {exc.args[0]}")
    if device == "cuda" and not torch.cuda.is_available():
        fail("--device: cuda requested but torch.cuda.is_available() is False")
    impl = None
    if impl_spec is not None:
        impl = load_impl(impl_spec)
        subjectless = [c.id for c in claims if c.subject is None]
        if subjectless:
            fail(f"--impl: claim(s) {', '.join(subjectless)} have no subject to replace")
        subjects = {c.subject.name: c.subject for c in claims if c.subject}
        if len(subjects) > 1:
            fail(f"--impl: the selected claims have different subjects ({', '.join(sorted(subjects))}); narrow --claim")
        for subject in subjects.values():
            why = subject.cannot_call(impl)
            if why is not None:
                fail(f"--impl: {why} (subject {subject.name}: {subject.signature})")
    ctx = registry.CheckContext(
        budget=budget,  # type: ignore[arg-type]
        device=torch.device(device),
        dtypes=tuple(DTYPES[d] for d in dtypes) or None,
        seed=seed,
    )
    console = Console(stderr=True)
    results: list[tuple[registry.Claim, Evidence]] = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("verifying", total=len(claims))
        for claim in claims:
            progress.update(task, description=claim.id)
            results.append((claim, claim.run(ctx, impl=impl)))
            progress.advance(task)
    _print_verdicts(results, impl_spec)
    if json_path is not None:
        payload = {
            "claims": [evidence_record(c, ev) for c, ev in results],
            "environment": {**environment(ctx.device, budget, seed), "impl": impl_spec},
        }
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(strict_json(payload), indent=2, allow_nan=False) + "\n")
    code = exit_code([ev for _, ev in results])
    if code:
        sys.exit(code)


def _print_verdicts(results: list[tuple[registry.Claim, Evidence]], impl_spec: str | None) -> None:
    console = Console(width=max(120, Console().width))
    title = "verification" + (f" of {impl_spec}" if impl_spec else "")
    table = Table(title=title)
    table.add_column("claim", no_wrap=True)
    for col in ("kind", "verdict", "metric", "tolerance", "cases", "seconds"):
        table.add_column(col, justify="right" if col in ("metric", "tolerance", "cases", "seconds") else "left")
    verdicts = {"holds": "[green]holds[/]", "fails": "[bold red]FAILS[/]", "not applicable": "[yellow]n/a[/]"}
    for claim, ev in results:
        shown = ev.applicable
        table.add_row(
            escape(claim.id),
            claim.kind,
            verdicts[ev.verdict],
            _fmt(ev.metric) if shown else "-",
            _fmt(ev.tolerance) if shown else "-",
            str(ev.cases),
            f"{ev.seconds:.1f}",
        )
    console.print(table)
    for claim, ev in results:
        if not ev.applicable:
            console.print(f"[yellow]-[/] {escape(claim.id)}: not applicable: {escape(ev.details['reason'])}")
        for finding in ev.failures():
            note = f" ({finding.note})" if finding.note else ""
            line = f"{claim.id}: {finding.name}: {_fmt(finding.metric)} > {_fmt(finding.tolerance)}{note}"
            console.print(f"[red]✗[/] {escape(line)}")
    held = sum(ev.holds for _, ev in results)
    skipped = sum(not ev.applicable for _, ev in results)
    console.print(f"{held}/{len(results)} claims hold" + (f", {skipped} not applicable" if skipped else ""))


@cli.command()
@click.option("--suite", default="aaren", show_default=True, help="Benchmark suite name.")
@click.option(
    "--out",
    "out_dir",
    default=Path("benchmarks/results"),
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the results (JSON, CSV, PNG), relative to the current directory; created if missing.",
)
@click.option("--quick", is_flag=True, help="Tiny sizes: a smoke run of seconds.")
def bench(suite: str, out_dir: Path, quick: bool) -> None:
    """Run a benchmark suite (correctness first); write CSV/JSON and a plot.

    A progress bar over the measured points runs on stderr; a table of the targets (measured
    ratio, target, met or missed) is printed when the run ends.  Exit code 1 if a fast
    configuration disagrees with its float64 reference (nothing is then timed or written).
    """
    from attnverify.benchmarks import SUITES, run_suite
    from attnverify.benchmarks.runner import CorrectnessError, expected_points, summary_table, watch

    if suite not in SUITES:
        fail(f"--suite: unknown suite {suite!r}; known: {', '.join(sorted(SUITES))}")
    total = expected_points(suite, quick, out_dir, Path(__file__).resolve().parents[2] / "benchmarks" / "results")
    try:
        with watch(suite, total) as progress:
            path = run_suite(suite, out_dir, quick=quick, progress=progress)
    except CorrectnessError as exc:
        click.echo(f"✗ {exc}", err=True)
        sys.exit(1)
    Console(width=max(120, Console().width)).print(summary_table(json.loads(path.read_text())))
    click.echo(f"wrote {path}")


@cli.command()
@click.option("--source", type=click.Path(file_okay=False, exists=True, path_type=Path), help="The book/ folder.")
def book(source: Path | None) -> None:
    """Build the executed book into book/_build/html (a failing cell fails the build)."""
    from attnverify.book import build, find_source

    source = source or find_source()
    if source is None:
        fail("--source: no book/ folder found; run from a source checkout or pass --source")
    sys.exit(build(source))


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: runs the CLI, reporting usage errors on one line with exit code 2."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="attnverify", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"attnverify: error: {exc.format_message()}", err=True)
        sys.exit(2 if isinstance(exc, click.UsageError | BadArguments) else exc.exit_code)
