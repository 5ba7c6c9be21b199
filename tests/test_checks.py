"""pdnn.checks: the one home of argument checks and of the names options accept."""
from __future__ import annotations

import re

import pytest

from pdnn import checks
from pdnn.checks import one_of, positive_int, positive_ints
from pdnn.cli import build_parser


@pytest.mark.parametrize("value", [0, -3, 1.0, "2", True, None])
def test_positive_int_names_the_argument_and_the_value(value):
    with pytest.raises(ValueError, match="^" + re.escape(f"repeats must be an integer >= 1, got {value!r}") + "$"):
        positive_int("repeats", value)


def test_a_flag_is_no_integer_whoever_made_it():
    import numpy as np
    import torch

    assert [checks.integer(v) for v in (np.int64(3), torch.tensor(3), 3)] == [3, 3, 3]
    assert [checks.integer(v) for v in (True, np.True_, torch.tensor(True), 2.0)] == [None] * 4
    assert checks.integer(torch.tensor([3])) is None and checks.integer(np.array([3])) is None  # arrays, not numbers


def test_positive_ints_checks_every_entry_and_the_length():
    assert positive_ints("input_shape", [3, 32, 32], length=3) == (3, 32, 32)
    for bad in [(), (3, 0, 32), (3, 32), (3, 32, True)]:
        with pytest.raises(ValueError, match=r"input_shape must be \(C, H, W\), got"):
            positive_ints("input_shape", bad, "(C, H, W)", length=3)


def test_a_count_beyond_torch_s_int64_is_refused():
    assert positive_int("n", 2**63 - 1) == 2**63 - 1
    with pytest.raises(ValueError, match=re.escape("n must be an integer >= 1, got 9223372036854775808, more than "
                                                   "2**63 - 1, the largest count torch holds")):
        positive_int("n", 2**63)
    assert positive_int("subset", 10**20, most=None) == 10**20  # a cap: any larger number means all
    with pytest.raises(ValueError, match=re.escape("k must be an integer >= 1, got 9, more than 8")):
        positive_int("k", 9, most=8)


def test_numbers_too_long_to_write_are_named_by_their_size():
    """Python writes no integer of more than 4300 digits: each message raised a ValueError of its own."""
    from types import SimpleNamespace

    import numpy as np
    import torch

    from pdnn import SampledModel
    from pdnn.adaptive import StoppingRule
    from pdnn.convert.rundir import holdout_indices
    from pdnn.energy import tradeoff
    from pdnn.generation import fid_vs_samples

    huge = 10**5000
    for call, said in ((lambda: positive_int("n", -huge), "n must be an integer >= 1, got a negative integer of 16610 bits"),
                       (lambda: positive_ints("shape", [1, -huge]), "got a list holding an integer too long to write"),
                       (lambda: checks.torch_seed("seed", huge), "got an integer of 16610 bits"),
                       (lambda: one_of("mode", huge, ["a"]), "unknown mode an integer of 16610 bits"),
                       (lambda: SampledModel(torch.nn.Linear(2, 2), samples=-huge), "got a negative integer of 16610 bits"),
                       (lambda: SampledModel(torch.nn.Linear(2, 2), samples="auto", error=huge),
                        "not relative to their size), got an integer of 16610 bits"),
                       (lambda: StoppingRule(checkpoints=(1, huge, 2)), "checkpoints must be increasing integers >= 1, "
                                                                        "got a tuple holding an integer too long to write"),
                       (lambda: tradeoff([{"energy_j": 1.0, "accuracy": huge, "label": "a"}]),
                        "accuracy must be a finite number >= 0, got an integer of 16610 bits"),
                       (lambda: fid_vs_samples(None, torch.zeros(1), SimpleNamespace(dim=4, metric="m"), [1], -huge),
                        "--n a negative integer of 16610 bits is below"),
                       (lambda: StoppingRule(prior_variance=10**400), "prior_variance must be a finite number > 0"),
                       (lambda: StoppingRule(prior_pool=(10**400, 1)), "prior_pool must be (a sum of spreads"),
                       (lambda: fid_vs_samples(None, torch.zeros(1), SimpleNamespace(dim=4, metric="m"), [1], 8,
                                               repeats=10**20), "repeats must be an integer >= 1, got 1000"),
                       (lambda: holdout_indices(10, huge), "holdout must be a count >= 1 or a fraction in (0, 1), got an "
                                                           "integer of 16610 bits")):
        with pytest.raises(ValueError, match=re.escape(said)):
            call()
    assert holdout_indices(10, np.int64(3), 20) == holdout_indices(10, 3, 20)  # numpy's numbers, as Python's
    assert tradeoff([{"energy_j": np.float64(1.0), "accuracy": 0.5, "label": "a"}])["best"] is not None
    with pytest.raises(ValueError, match=r"energy_j must be a Python int or float \(a JSON number\), got float32 "
                                         r"np.float32\(1.0\)"):  # (the message said "finite number" of 1.0)
        tradeoff([{"energy_j": np.float32(1.0), "accuracy": 0.5, "label": "a"}])  # (no JSON number: unwritable)
    with pytest.raises(ValueError, match="points must be a list of dicts, got dict"):  # (its keys were the points)
        tradeoff({"energy_j": 1.0, "accuracy": 0.5})
    with pytest.raises(ValueError, match="point 1 must be a dict with 'energy_j' and 'accuracy', got float 0.5"):
        tradeoff([{"energy_j": 1.0, "accuracy": 0.5}, 0.5])


def test_one_of_lists_the_choices():
    assert one_of("aggregate", "layer", checks.AGGREGATIONS) == "layer"
    with pytest.raises(ValueError, match="unknown aggregate 'chip'; expected one of network, layer"):
        one_of("aggregate", "chip", checks.AGGREGATIONS)


def _choices(command: str, option: str) -> tuple:
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    return tuple(next(a for a in sub._actions if option in a.option_strings).choices)


@pytest.mark.parametrize("command, option, names", [
    ("eval", "--aggregate", checks.AGGREGATIONS), ("plot", "--aggregate", checks.AGGREGATIONS),
    ("energy", "--aggregate", checks.AGGREGATIONS), ("train", "--loss-rule", checks.LOSS_RULES),
    ("train", "--schedule", checks.SCHEDULES), ("study", "--schedule", checks.SCHEDULES),
    ("convert", "--method", checks.METHODS),
])
def test_the_command_line_offers_the_names_the_library_accepts(command, option, names):
    assert _choices(command, option) == names


def test_every_option_of_every_command_says_what_it_does():
    def silent(parser, command):
        for action in parser._actions:
            if action.option_strings and not action.help:
                yield f"{command} {action.option_strings[0]}"
            for name, sub in action.choices.items() if isinstance(action.choices, dict) else ():  # sub-commands
                yield from silent(sub, f"{command} {name}")

    assert not list(silent(build_parser(), "pdnn"))
