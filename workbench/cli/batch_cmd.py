"""``vlr-workbench find-batch``: the largest batch of a job that fits on the device, saved into a preset."""

from __future__ import annotations

from rich.table import Table

from engine import presets as P
from engine.errors import WorkbenchError
from engine.jobs.options import BATCH_KEYS as KEYS
from workbench.cli.job_runner import console


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "find-batch", help="find the largest batch that fits on the device (backs off on out-of-memory)",
        description="Runs real training steps of the preset's networks at growing batch sizes (doubling, then "
                    "bisecting after the first out-of-memory) and reports the largest that fits with its peak "
                    "memory. --save-as writes a derived preset with that batch size. Needs a CUDA GPU: on "
                    "the CPU nothing runs out of memory, so it refuses at once (set dsr.batch_size or "
                    "finetune.batch_size by hand there).")
    parser.add_argument("--preset", default="cpu-demo", help="preset name or .toml path (default cpu-demo)")
    parser.add_argument("--job", choices=sorted(KEYS), default="train-dsr")
    parser.add_argument("--max", type=int, default=512, help="largest batch to try (default 512)")
    parser.add_argument("--save-as", metavar="NAME", help="save a derived preset with the batch size found")
    parser.set_defaults(func=find_batch_command)


def find_batch_command(args) -> int:
    from engine.jobs.batch_search import require_cuda, search
    from engine.runtime import resolve

    if not 1 <= args.max <= 65536:
        raise WorkbenchError(f"--max {args.max}: give a batch size between 1 and 65536.")
    preset = P.load(args.preset)
    runtime = resolve(preset)
    require_cuda(runtime, args.job)   # before any network is built: on the CPU there is nothing to find
    result = search(preset, runtime, args.job, args.max)
    table = Table(title=f"{args.job} batch sizes on {runtime.device}")
    table.add_column("batch")
    table.add_column("fits")
    for n, fitted in sorted(result.tried.items()):
        table.add_row(str(n), "yes" if fitted else "out of memory")
    console.print(table)
    if result.largest == 0:
        raise WorkbenchError(f"not even a batch of 1 fits for {args.job} on {runtime.device}: lower the model size "
                             "(dsr.base_channels, dsr.residual_blocks) or turn on runtime.amp.")
    peak = f", peak {result.peak_mb:.0f} MiB" if result.peak_mb else ""
    limit = " (the --max limit: larger batches were not tried)" if result.largest == args.max else ""
    console.print(f"largest {KEYS[args.job]}: {result.largest}{peak}{limit}")
    if args.save_as:
        derived = P.derive(preset, args.save_as).with_changes({KEYS[args.job]: result.largest}, source="find-batch")
        console.print(f"saved {P.save(derived, args.save_as)}")
    return 0
