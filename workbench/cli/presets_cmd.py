"""``vlr-workbench presets``: list, show, validate, diff and save-as."""

from __future__ import annotations

import argparse
import tomllib

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engine import presets as P
from engine.errors import PresetError, WorkbenchError
from engine.presets.guide import SUMMARY_TABLE_KEYS, VLR_SIZE_KEYS

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)  # paths in errors stay unbroken


def register(sub: argparse._SubParsersAction) -> None:
    presets = sub.add_parser("presets", help="list, show, validate, compare and save hyperparameter presets",
                             description="Hyperparameter presets: the built-ins (read-only) and your own "
                                         f"(in {P.user_dir()}, or any .toml path).")
    cmds = presets.add_subparsers(dest="presets_command", metavar="ACTION", required=True)

    p = cmds.add_parser("list", help="list built-in and user presets")
    p.set_defaults(func=cmd_list)

    p = cmds.add_parser("show", help="print every value of a preset with its description and range")
    p.add_argument("preset", metavar="NAME|PATH")
    p.add_argument("--toml", action="store_true", help="print the TOML document instead of a table")
    p.set_defaults(func=cmd_show)

    p = cmds.add_parser("validate", help="check preset files; exit code 2 if any is invalid")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.set_defaults(func=cmd_validate)

    p = cmds.add_parser("diff", help="print the parameters that differ between two presets")
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.set_defaults(func=cmd_diff)

    p = cmds.add_parser("save-as", help="save a copy of a preset under a new name or path, with changes",
                        description="Save SRC as a user preset NEW (a name, stored in the user preset directory, "
                                    "or a .toml path), recording SRC as the preset it derives from.")
    p.add_argument("src", metavar="SRC")
    p.add_argument("new", metavar="NEW")
    p.add_argument("--set", dest="changes", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="change a value (TOML syntax: 0.7, true, \"cuda\", [0.9, 1.1]); repeatable")
    p.add_argument("--force", action="store_true", help="replace NEW if it exists (never a built-in)")
    p.set_defaults(func=cmd_save_as)


def cmd_list(args) -> int:
    table = Table(title="presets")
    for col in ("name", "kind", "VLR"):
        table.add_column(col, no_wrap=True)
    table.add_column("description")
    table.add_column("path", overflow="fold")
    for entry in P.list_presets():
        try:
            preset = P.load(str(entry.path))
            vlr, desc = f"{preset.data.vlr_width}x{preset.data.vlr_height}", preset.description
        except PresetError as exc:
            vlr, desc = "?", f"[red]invalid: {escape(str(exc))}[/]"
        table.add_row(entry.name, "built-in" if entry.builtin else "user", vlr, desc, str(entry.path))
    console.print(table)
    return 0


def cmd_show(args) -> int:
    preset = P.load(args.preset)
    if args.toml:
        import tomli_w
        console.print(tomli_w.dumps(preset.to_mapping()), markup=False)
        return 0
    console.print(f"[bold]{escape(preset.name)}[/]: {escape(preset.description)}"
                  + (f" (derived from {preset.derived_from})" if preset.derived_from else "")
                  + f"\n[dim]{escape(preset.source)}[/]")
    for section in P.SECTIONS:
        table = Table(title=escape(f"[{section}]"), title_justify="left", expand=True)
        table.add_column("key", no_wrap=True)
        table.add_column("value", no_wrap=True)
        table.add_column("description (valid values)", ratio=1)
        for info in P.iter_fields():
            if info.section == section:
                table.add_row(info.name, P.show_value(preset.get(info.key)), f"{info.help} ({info.range_text()})")
        console.print(table)
    return 0


def cmd_validate(args) -> int:
    failures = 0
    for path in args.paths:
        try:
            P.load(path if P.store.is_path(path) else path)
        except WorkbenchError as exc:
            failures += 1
            err_console.print(f"[bold red]invalid:[/] {escape(str(exc))}")
        else:
            console.print(f"[green]valid:[/] {path}")
    return 2 if failures else 0


def cmd_diff(args) -> int:
    a, b = P.load(args.a), P.load(args.b)
    changes = P.diff(a, b)
    if not changes:
        console.print(f"{a.name} and {b.name} have the same values.")
        return 0
    key_rows = set(SUMMARY_TABLE_KEYS) | set(VLR_SIZE_KEYS)
    groups = [("VLR size and the guide's summary table", [c for c in changes if c[0] in key_rows]),
              ("other parameters", [c for c in changes if c[0] not in key_rows])]
    for title, rows in groups:
        if not rows:
            continue
        table = Table(title=f"{a.name} -> {b.name}: {title}")
        for col in ("key", a.name, b.name):
            table.add_column(col, no_wrap=True)
        for key, old, new in rows:
            table.add_row(key, P.show_value(old), P.show_value(new))
        console.print(table)
    return 0


def parse_assignment(text: str) -> tuple[str, object]:
    """``section.key=value`` with a TOML value; bare words are taken as text."""
    if "=" not in text:
        raise PresetError(f"--set {P.quote(text)}: expected SECTION.KEY=VALUE, e.g. --set dsr.lambda_identity=0.7.")
    key, raw = (part.strip() for part in text.split("=", 1))
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    except (RecursionError, ValueError):  # nested too deeply; an integer of more than 4300 digits
        raise PresetError(f"--set {P.quote(key, 100)}: the value {P.quote(raw)} cannot be read as a setting (too "
                          "deeply nested or too long a number). Give a plain value, e.g. 0.7.") from None
    return key, value


def cmd_save_as(args) -> int:
    source = P.load(args.src)
    changes = dict(parse_assignment(item) for item in args.changes)
    preset = P.derive(source, args.new).with_changes(changes, source="--set")
    path = P.save(preset, args.new, overwrite=args.force)
    console.print(f"saved {path} (derived from {source.name}"
                  + (f"; changed {', '.join(changes)}" if changes else "") + ")")
    return 0


__all__ = ["register", "WorkbenchError"]
