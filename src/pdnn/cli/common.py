"""Options shared by several commands."""
from __future__ import annotations

import argparse


def add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", action="append", metavar="ROOT",
                        help="a root holding datasets in their conventional folders (repeatable; "
                             "searched before $PDNN_DATA and the default roots)")
    parser.add_argument("--subset", type=int, metavar="N", help="use only the first N examples of each split")


def add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
