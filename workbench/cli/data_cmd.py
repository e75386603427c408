"""``vlr-workbench prepare``, ``demo-data`` and ``check-data``: make and check datasets in the guide's layout."""

from __future__ import annotations

import argparse
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from engine.data.layout import EXTRA_SPLITS, MANIFEST, SPLITS, has_split, parse_size
from engine.data.prepare import parse_split, prepare_dataset
from engine.errors import DataError

console = Console(highlight=False)


def _size_arg(text: str) -> tuple[int, int]:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _side_arg(text: str) -> int:
    if not text.strip().isdigit() or not 0 < int(text) <= 4096:
        raise argparse.ArgumentTypeError(f"expected a side in pixels from 1 to 4096, got {text[:50]!r}")
    return int(text)


def _degrade_arg(text: str):
    from engine.data.camera import parse_spec

    try:
        return parse_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count_arg(text: str) -> int:
    if not text.strip().isdigit() or len(text.strip()) > 9:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text[:50]!r}")
    return int(text)


def _split_arg(text: str) -> tuple[float, float, float]:
    try:
        return parse_split(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare", help="turn a folder of face photos into the HR/VLR dataset layout",
        description="Make ROOT/{train,val,test}_processed/{hr_images,vlr_images}/SUBJECT_rest.png from SRC: one "
                    "sub-folder per subject (s1/, s2/, ...) or files named SUBJECT_rest.ext / SUBJECT.rest (Yale). "
                    "HR = centre square crop resized to 128x128 (LANCZOS); VLR = antialiased bicubic downsample "
                    "of HR. Split by subject: TEST% of the subjects are held out whole (unseen identities), VAL% "
                    "of each remaining subject's images are held out (closed-set validation), TRAIN is the rest. "
                    "--unlabelled DIR adds faces without labels to DSR's training pairs only "
                    "(ROOT/unlabelled_processed); --distractors N holds N of them out as gallery distractors "
                    "(ROOT/distractors_processed).")
    p.add_argument("src", type=Path, metavar="SRC", help="folder of face photos (any format Pillow reads)")
    p.add_argument("dst", type=Path, metavar="DST", help="new dataset folder (must not exist or be empty)")
    p.add_argument("--vlr", type=_size_arg, default=(32, 32), metavar="WxH", help="VLR size, e.g. 32x32 or 14x16")
    p.add_argument("--split", type=_split_arg, default=(0.8, 0.1, 0.1), metavar="TRAIN/VAL/TEST",
                   help="percentages (default 80/10/10): TEST of subjects, VAL of each train subject's images")
    p.add_argument("--seed", type=int, default=0, help="seed of the subject/image split (default 0)")
    p.add_argument("--degrade", nargs="?", const="default", type=_degrade_arg, metavar="SPEC",
                   help="camera-like VLR images (the 'same camera' protocol): blur, motion, resize method, noise, "
                        "JPEG, drawn per image from --seed (SPEC e.g. 'blur=0.3:1.5,noise=0:6,jpeg=40:90', the "
                        "default; keys: blur aniso motion resize noise gray poisson jpeg second; recorded in the "
                        "manifest)")
    p.add_argument("--force", action="store_true",
                   help="replace the dataset DST holds (a folder with a manifest.json; never other files)")
    p.add_argument("--unlabelled", type=Path, metavar="DIR",
                   help="a folder of faces without identity labels (flat or nested; people not in SRC): DSR "
                        "training pairs only, never fine-tuning, validation or evaluation")
    p.add_argument("--distractors", type=_count_arg, default=0, metavar="N",
                   help="hold N images of --unlabelled out of all training as gallery distractors (one identity "
                        "each) for `evaluate --distractors M` (M <= N); drawn with --seed")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser(
        "demo-data", help="write procedurally drawn demo faces in the dataset layout",
        description="Draw distinct synthetic identities (fine-detail cues: eyes, brows, nose, mouth, marks) with "
                    "per-image pose, expression, lighting and noise. Deterministic in --seed. A quarter of the "
                    "identities are test-only; 20% of each other identity's images form val.")
    p.add_argument("dst", type=Path, metavar="DST", help="new dataset folder (must not exist or be empty)")
    p.add_argument("--identities", type=int, default=40, help="number of identities (default 40)")
    p.add_argument("--per-identity", type=int, default=10, help="images per identity (default 10)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument("--vlr", type=_size_arg, default=(16, 16), metavar="WxH", help="VLR size (default 16x16)")
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("check-data", help="load every split of a dataset and report images and subjects",
                       description="Check pairing, image sizes and readability of every file; exit code 2 "
                                   "with the file named if anything is wrong.")
    p.add_argument("root", type=Path, metavar="ROOT", help="dataset root")
    p.add_argument("--vlr", type=_size_arg, default=None, metavar="WxH",
                   help="expected VLR size (default: the manifest's)")
    p.add_argument("--hr-size", type=_side_arg, default=None,
                   help="expected HR side (default: the manifest's, else 128)")
    p.set_defaults(func=cmd_check_data)


@contextmanager
def _progress_bar(label: str) -> Iterator:
    with Progress(TextColumn(f"[bold]{escape(label)}[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _counts_table(title: str, counts: dict) -> Table:
    console.print(title)
    table = Table()
    table.add_column("split")
    table.add_column("images", justify="right")
    table.add_column("subjects", justify="right")
    for split in (*SPLITS, *EXTRA_SPLITS):
        if split in counts:
            subjects = counts[split].get("subjects")
            table.add_row(split, str(counts[split]["images"]), "-" if subjects is None else str(subjects))
    return table


def cmd_prepare(args: argparse.Namespace) -> int:
    with _progress_bar("preparing") as progress:
        manifest = prepare_dataset(args.src, args.dst, vlr_size=args.vlr, split=args.split, seed=args.seed,
                                   progress=progress, degrade=args.degrade, force=args.force,
                                   unlabelled=args.unlabelled, distractors=args.distractors)
    console.print(_counts_table(f"{escape(str(args.dst))}  (VLR {args.vlr[0]}x{args.vlr[1]})", manifest["splits"]))
    if manifest["skipped"]:
        console.print(f"skipped {len(manifest['skipped'])} file(s): not images, or smaller than the VLR size "
                      f"(listed in {MANIFEST})")
    return 0


def cmd_demo_data(args: argparse.Namespace) -> int:
    with _progress_bar("drawing demo faces") as progress:
        from engine.data.demo import generate_demo_dataset   # imports torch: not at the CLI's start

        root = generate_demo_dataset(args.dst, identities=args.identities, per_identity=args.per_identity,
                                     seed=args.seed, vlr_size=args.vlr, progress=progress)
    manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    console.print(_counts_table(f"{escape(str(root))}  (VLR {args.vlr[0]}x{args.vlr[1]})", manifest["splits"]))
    return 0


def _read_manifest(root: Path) -> dict:
    """``root/manifest.json`` as a dict ({} when absent); a damaged one is a DataError naming it."""
    path = root / MANIFEST
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DataError(f"{path}: cannot read the dataset manifest ({type(exc).__name__}: {str(exc)[:200]}). "
                        "Delete it and pass the sizes with --vlr WxH and --hr-size N, or re-create the dataset "
                        "with `vlr-workbench prepare`.") from None
    if not isinstance(manifest, dict):
        raise DataError(f"{path}: the dataset manifest is not a JSON object. Delete it and pass --vlr WxH.")
    return manifest


def _manifest_size(manifest: dict, key: str, root: Path) -> tuple[int, int] | None:
    """``manifest[key]`` as (width, height): a list of two whole numbers in 1..4096, else a DataError."""
    if key not in manifest:
        return None
    value = manifest[key]
    if (isinstance(value, list) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 4096 for v in value)):
        return value[0], value[1]
    shown = json.dumps(value)[:100]
    raise DataError(f"{root / MANIFEST}: '{key}' is {shown}, expected [width, height] in pixels. Fix the file or "
                    f"pass the size with {'--vlr WxH' if key == 'vlr_size' else '--hr-size N'}.")


def cmd_check_data(args: argparse.Namespace) -> int:
    if not args.root.is_dir():
        state = "is a file, not a folder" if args.root.exists() else "does not exist"
        raise DataError(f"dataset root {args.root} {state}. Give the folder holding "
                        "{train,val,test}_processed/{hr_images,vlr_images}.")
    manifest = _read_manifest(args.root)
    vlr = args.vlr or _manifest_size(manifest, "vlr_size", args.root)
    if vlr is None:
        raise DataError(f"{args.root} has no {MANIFEST} giving the VLR size: pass it with --vlr WxH "
                        f"(e.g. --vlr 32x32).")
    hr_pair = None if args.hr_size else _manifest_size(manifest, "hr_size", args.root)
    hr = args.hr_size or (hr_pair[0] if hr_pair else 128)
    counts = {}
    for split in (*SPLITS, *(s for s in EXTRA_SPLITS if has_split(args.root, s))):
        with _progress_bar(f"loading {split}") as progress:
            from engine.data.pairs import load_split   # imports torch: not at the CLI's start

            loaded = load_split(args.root, split, vlr, hr, progress=progress)
        counts[split] = {"images": len(loaded), "subjects": None if split == "unlabelled" else loaded.num_subjects}
    console.print(_counts_table(f"{escape(str(args.root))}  (HR {hr}x{hr}, VLR {vlr[0]}x{vlr[1]}): OK", counts))
    return 0
