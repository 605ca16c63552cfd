"""``mixupe data``: list, describe or prepare the datasets."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mixupe.cli.common import EXIT_OK, CliError, out
from mixupe.cli.options import Formatter, add_pairs

_ACTIONS = (("describe", "print a dataset's domain, classes, size, source and loader options "
                         "(--load: also its split sizes)"),
            ("prepare", "build a dataset's cache (superpixels) and load it once, so later runs "
                        "start at once and missing files show now"))


def add_parser(sub: Any) -> None:
    """The ``data`` subcommand and its actions."""
    data = sub.add_parser("data", help="list, describe or prepare datasets",
                          description="Datasets shipped in packages or under a root folder.")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    data_sub.add_parser("list", help="list the dataset names",
                        description="List every dataset name with its domain.")
    for action, text in _ACTIONS:
        p = data_sub.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".",
                                formatter_class=Formatter)
        p.add_argument("name", metavar="NAME", help="dataset name (see `mixupe data list`)")
        p.add_argument("--root", type=Path, help="folder with the data files (default: the "
                                                 "packaged copy)")
        p.add_argument("--seed", type=int, help="seed of the train/val/test split (default: 0)")
        add_pairs(p, "--option", "options", "KEY=VALUE",
                  "loader option (repeatable), e.g. subset=5000")
        if action == "describe":
            p.add_argument("--load", action="store_true",
                           help="load the data and print the split sizes")


def _one_value(flag: str, given: Any, option: Any) -> Any:
    """The value of ``flag``, given as the flag or as ``--option NAME=``, not both differently."""
    if given is not None and option is not None and str(given) != str(option):
        raise CliError(f"{flag} {given} and --option {flag[2:]}={option} disagree; pass the "
                       f"value once, as {flag}")
    return given if given is not None else option


def _list() -> int:
    import mixupe.data as data

    rows = [data.describe(name) for name in data.names()]
    out(f"{'name':27s} {'domain':9s} {'classes':>7s}  {'size':28s} offline here")
    for r in rows:
        classes = "any" if r["num_classes"] is None else str(r["num_classes"])
        out(f"{r['name']:27s} {r['domain']:9s} {classes:>7s}  {r['size']:28s} "
            f"{'yes' if r['packaged'] else 'no (root=)'}")
    return EXIT_OK


def _show_loaded(ds: Any, info: dict[str, Any]) -> None:
    lines = [
        f"name:          {ds.name}",
        f"domain:        {ds.domain}",
        f"classes:       {ds.num_classes}",
        f"input shape:   {tuple(ds.input_shape)}",
        f"train/val/test: {len(ds.train)} / {len(ds.val)} / {len(ds.test)}",
        f"source:        {ds.source}",
        f"options:       {info.get('options')}",
    ]
    out("\n".join(lines))


def run(args: argparse.Namespace) -> int:
    """``list``, ``describe`` (``--load``: with the split sizes) or ``prepare``."""
    import mixupe.data as data

    if args.data_command == "list":
        return _list()
    info = data.describe(args.name)  # ConfigError naming the choices for an unknown name
    options = dict(args.options)
    # root and seed are loader options too: --option root=X means --root X.
    root = _one_value("--root", args.root, options.pop("root", None))
    seed = _one_value("--seed", args.seed, options.pop("seed", None))
    if args.data_command == "prepare":
        # The same options (cache_dir= included) reach the load below, which then finds the
        # cache just built instead of building another one.
        cache = data.prepare(args.name, root=root, **options)
        if cache is not None:
            out(f"cache: {cache}")
    if args.data_command == "describe" and not args.load:
        out("\n".join(f"{key + ':':13s} {value}" for key, value in info.items()))
        out("(pass --load to load it and show the split sizes)")
        return EXIT_OK
    ds = data.load(args.name, root=root, seed=0 if seed is None else seed, **options)
    _show_loaded(ds, info)
    if args.data_command == "prepare":
        out(f"{ds.name} is ready")
    return EXIT_OK
