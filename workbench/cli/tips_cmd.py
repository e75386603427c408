"""``vlr-workbench tips RUN_DIR``: tuning tips and the guide's targets for a run; ``--apply`` saves a patch."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from engine import presets as P
from engine.errors import WorkbenchError
from engine.tips import (Target, Tip, apply_tip, short_run_note_for_run, target_set_name, tip_changes,
                         tips_for_run)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tips", help="tuning tips and validation targets for a run directory",
                       description="Read RUN_DIR/preset.toml, metrics.jsonl and eval.json; print the guide's "
                                   "tuning tips that the metrics call for (each with a preset patch) and the "
                                   "validation targets, met or not. --apply N --save-as NAME saves tip N's patch "
                                   "as a new user preset.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--apply", type=int, metavar="N", help="number of the tip to apply (as printed)")
    p.add_argument("--save-as", metavar="NAME", help="user preset name or .toml path for the patched preset")
    p.add_argument("--force", action="store_true", help="replace NAME if it exists (never a built-in)")
    p.set_defaults(func=cmd_tips)


def cmd_tips(args) -> int:
    if (args.apply is None) != (args.save_as is None):
        raise WorkbenchError("--apply N and --save-as NAME go together: give the number of a tip and the name "
                             "of the new preset, e.g. `vlr-workbench tips RUN_DIR --apply 1 --save-as my-preset`.")
    console = Console(highlight=False)
    preset, tips, targets = tips_for_run(args.run_dir)
    if args.apply is not None:
        return _apply(console, preset, tips, args)
    console.print(f"[bold]Tips for {escape(str(args.run_dir))}[/] (preset {escape(preset.name)}, "
                  f"VLR {preset.data.vlr_width}x{preset.data.vlr_height})")
    short = short_run_note_for_run(args.run_dir)
    if not tips:
        console.print(f"No tips yet. {escape(short)}" if short else
                      "No tips: nothing in the metrics calls for a change.", soft_wrap=True)
    elif short:
        console.print(f"Note: {escape(short)}", soft_wrap=True)
    for number, tip in enumerate(tips, 1):
        _print_tip(console, number, preset, tip)
    console.print()
    console.print(_targets_table(targets, target_set_name(*preset.vlr_size)))
    if tips:
        console.print(f"Apply one with: vlr-workbench tips {escape(str(args.run_dir))} --apply N --save-as NAME",
                      soft_wrap=True)
    return 0


def _print_tip(console: Console, number: int, preset, tip: Tip) -> None:
    console.print(f"\n[bold]{number}. {escape(tip.title)}[/] [dim]({tip.rule})[/]")
    for label, text in (("Observed", tip.observed), ("Fix", tip.fix), ("Why", tip.why)):
        console.print(Padding(Text.assemble((f"{label}: ", "bold"), text), (0, 0, 0, 3)))
    console.print("   [bold]Patch:[/]")
    _print_changes(console, tip_changes(preset, tip))


def _print_changes(console: Console, changes) -> None:
    for key, old, new in changes:
        console.print(f"     {key}: {P.show_value(old)} -> {P.show_value(new)}", soft_wrap=True, markup=False)


def _targets_table(targets: list[Target], set_name: str) -> Table:
    table = Table(title=f"Validation targets ({set_name} set)")
    table.add_column("metric")
    for column in ("value", "target", "status", "gap"):
        table.add_column(column, no_wrap=True)
    for t in targets:
        if t.value is None:
            table.add_row(escape(t.label), "-", f"{t.comparison} {_fmt(t.target, t.unit)}", "[dim]no data[/]", "-")
            continue
        status = "[green]met[/]" if t.met else "[red]not met[/]"
        size = f"{100 * abs(t.gap):.1f} points" if t.unit == "%" else _fmt(abs(t.gap), t.unit)
        gap = f"{size} {'short' if t.gap > 0 else 'margin'}"
        table.add_row(escape(t.label), _fmt(t.value, t.unit), f"{t.comparison} {_fmt(t.target, t.unit)}", status, gap)
    return table


def _fmt(value: float, unit: str) -> str:
    if unit == "%":
        return f"{100 * value:.1f}%"
    if unit == "dB":
        return f"{value:.2f} dB"
    return f"{value:.4g}"


def _apply(console: Console, preset, tips: list[Tip], args) -> int:
    if not tips:
        short = short_run_note_for_run(args.run_dir)
        why = f"yet. {short}" if short else "(nothing in its metrics calls for a change)."
        raise WorkbenchError(f"--apply {args.apply}: {args.run_dir} has no tips to apply {why} Run "
                             "`vlr-workbench tips RUN_DIR` to see them.")
    if not 1 <= args.apply <= len(tips):
        raise WorkbenchError(f"--apply {args.apply}: {args.run_dir} has {len(tips)} tip(s); give a number from 1 "
                             f"to {len(tips)} as printed by `vlr-workbench tips {args.run_dir}`.")
    tip = tips[args.apply - 1]
    patched = P.derive(apply_tip(preset, tip), args.save_as)
    path = P.save(patched, args.save_as, overwrite=args.force)
    console.print(f"Applied tip {args.apply} ({escape(tip.title)}) to {escape(preset.name)}:")
    _print_changes(console, tip_changes(preset, tip))
    console.print(f"Saved {escape(str(path))}", soft_wrap=True)
    return 0
