"""Technology tables: what one primitive operation or memory access costs, with its source.

A table is a TOML file (the default, ``tables/horowitz-45nm.toml``, ships with the package)::

    name = "horowitz-45nm"
    source = "M. Horowitz, ISSCC 2014"

    [ops.int_add]                         # one of REQUIRED_OPS
    scaling = "linear"                    # linear | quadratic | constant
    points_pj = { 8 = 0.03, 32 = 0.1 }    # energy at these bit widths
    source = "Horowitz 2014"

    [neuron]
    pbit_random_bits = 8                  # p-bit comparator / random-number width
    noise_random_bits = 16                # random bits per draw of a noise injector
    source = "design choice"

    [memory.dram]                         # any number of levels
    energy_pj = 1300.0                    # one access of word_bits bits
    word_bits = 64
    source = "Horowitz 2014"

    [aliases]
    sram = "sram_8kb"

Scaling. An operation's energy is known at a few widths; at other widths it is interpolated
linearly in the operation's *size* between the two nearest points and taken proportional to size
outside them. Size is the bit width for ``linear`` (an adder or a comparator has one cell per
bit) and ``b_a * b_w`` for ``quadratic`` (an array multiplier has one partial-product cell per
pair of bits); ``constant`` ignores width. Because every rule is monotone, a wider operand never
costs less, which the tests check.

Every number is validated on loading, and a key the format does not have is an error (a typo
such as ``energy_pJ`` would otherwise leave the real key missing or silently unused); a bad table
raises :class:`TechError` (a ``ValueError``) naming the file and the key.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..checks import positive_int
from ..errors import UsageError
from ..nn.neurons import FLOAT_BITS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

DEFAULT_TABLE = "horowitz-45nm"
REQUIRED_OPS = ("int_add", "int_mult", "float_add", "float_mult", "rng_bit", "pbit_lut", "float_nonlinearity")
SCALINGS = ("linear", "quadratic", "constant")
# the keys a table may hold, per section ([ops.*] names are free: extra operations are kept)
TABLE_KEYS = ("name", "description", "source", "ops", "memory", "aliases", "neuron")
OP_KEYS = ("scaling", "points_pj", "source")
MEMORY_KEYS = ("energy_pj", "word_bits", "source")
NEURON_KEYS = ("pbit_random_bits", "noise_random_bits", "source")


class TechError(UsageError):
    """A technology table is missing a key, holds a bad number, or names an unknown level."""


@dataclass(frozen=True)
class Op:
    """One primitive operation: energies (pJ) at a few sizes and the rule between them."""

    name: str
    scaling: str
    points: tuple[tuple[int, float], ...]  # (bits, pJ), sorted by bits
    source: str

    def size(self, a: int, b: int | None = None) -> float:
        """What the energy is proportional to: ``a * b`` bits for a quadratic operation, else the
        wider operand (a linear multiply of 8 by 1 bits was priced as 8 bits, and of 1 by 8 as 1)."""
        if self.scaling == "quadratic":
            return float(a * (a if b is None else b))
        return float(a if b is None else max(a, b))

    def energy_pj(self, a: int, b: int | None = None) -> float:
        """Energy of one operation on ``a``-bit operands (``a`` by ``b`` bits for a multiply)."""
        if self.scaling == "constant":
            return self.points[0][1]
        s = self.size(a, b)
        sizes = [self.size(bits) for bits, _ in self.points]
        energies = [e for _, e in self.points]
        if s <= sizes[0]:
            return energies[0] * s / sizes[0]
        if s >= sizes[-1]:
            return energies[-1] * s / sizes[-1]
        for (s0, e0), (s1, e1) in zip(zip(sizes, energies), zip(sizes[1:], energies[1:])):
            if s0 <= s <= s1:
                return e0 + (e1 - e0) * (s - s0) / (s1 - s0)
        raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True)
class MemoryLevel:
    """A memory: ``energy_pj`` per access of ``word_bits`` bits (reads and writes alike)."""

    name: str
    energy_pj: float
    word_bits: int
    source: str

    @property
    def pj_per_bit(self) -> float:
        return self.energy_pj / self.word_bits


@dataclass(frozen=True)
class Technology:
    """A validated technology table. Build one with :func:`load_table`.

    Example:
        >>> tech = load_table()                      # the shipped 45 nm table
        >>> tech.op("int_add").energy_pj(16)         # interpolated between 8 and 32 bits
        0.05333...
        >>> tech.memory("dram").pj_per_bit
        20.3125
    """

    name: str
    description: str
    source: str
    path: str
    ops: dict[str, Op]
    memories: dict[str, MemoryLevel]
    aliases: dict[str, str] = field(default_factory=dict)
    pbit_random_bits: int = 8
    noise_random_bits: int = 16

    def op(self, name: str) -> Op:
        if name not in self.ops:
            raise TechError(f"technology table {self.path}: missing [ops.{name}]")
        return self.ops[name]

    @property
    def levels(self) -> list[str]:
        """Memory level names, aliases included."""
        return sorted(self.memories) + sorted(self.aliases)

    def memory(self, level: str, role: str | None = None) -> MemoryLevel:
        """The level named ``level`` (or an alias of it). ``role`` starts an error with what the
        level was asked for (``"weight memory"``, an option name): a run sets two levels."""
        name = self.aliases.get(level, level)
        if name not in self.memories:
            raise TechError(
                f"{role + ': ' if role else ''}unknown memory level {level!r}; technology table {self.path} "
                f"has the levels {', '.join(self.levels)}"
            )
        return self.memories[name]

    # The arithmetic the energy model needs.
    def float_add_pj(self) -> float:
        return self.op("float_add").energy_pj(FLOAT_BITS)

    def float_mult_pj(self) -> float:
        return self.op("float_mult").energy_pj(FLOAT_BITS)

    def int_add_pj(self, bits: int) -> float:
        return self.op("int_add").energy_pj(bits)

    def int_mult_pj(self, a_bits: int, b_bits: int) -> float:
        return self.op("int_mult").energy_pj(a_bits, b_bits)

    def rng_pj(self, bits: int) -> float:
        """``bits`` uniformly random bits."""
        return self.op("rng_bit").energy_pj(bits)

    def to_dict(self) -> dict:
        """Every number of the table and its source, JSON-serialisable (energies in pJ): result
        files carry it, so a result priced with ``--tech FILE`` says what it was priced with."""
        return {
            "name": self.name,
            "path": self.path,
            "source": self.source,
            "ops_pj": {n: {"scaling": o.scaling, "points_pj": {str(b): e for b, e in o.points}, "source": o.source}
                       for n, o in self.ops.items()},
            "memory": {n: {"energy_pj": m.energy_pj, "word_bits": m.word_bits, "pj_per_bit": m.pj_per_bit,
                           "source": m.source} for n, m in self.memories.items()},
            "aliases": dict(self.aliases),
            "pbit_random_bits": self.pbit_random_bits,
            "noise_random_bits": self.noise_random_bits,
        }


def _number(value, where: str, path: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TechError(f"technology table {path}: {where} must be a number, got {value!r}")
    if value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise TechError(f"technology table {path}: {where} must be {bound} (an energy), got {value!r}")
    return float(value)


def _bits(value, where: str, path: str) -> int:
    """A bit width written as a TOML integer (``8``, not ``"8"``, ``8.0`` or ``true``)."""
    try:
        return positive_int(f"technology table {path}: {where}", value, "a bit width (an integer >= 1, not quoted)")
    except ValueError as err:
        raise TechError(str(err)) from None


def _bits_key(key: str, where: str, path: str) -> int:
    """A bit width written as a TOML key: keys are always strings, so ``8 = 0.03`` gives ``"8"``."""
    if not (isinstance(key, str) and key.isascii() and key.isdigit() and int(key) >= 1):  # not "²"
        raise TechError(f"technology table {path}: {where} keys must be bit widths (integers >= 1), got {key!r}")
    return int(key)


def _known_keys(entry: dict, allowed: tuple[str, ...], where: str, path: str) -> None:
    """Reject keys the table format does not have: a typo (``energy_pJ``) must not be ignored."""
    unknown = [k for k in entry if k not in allowed]
    if unknown:
        raise TechError(f"technology table {path}: unknown key{'s' if len(unknown) > 1 else ''} "
                        f"{', '.join(map(repr, unknown))} in {where}; allowed: {', '.join(allowed)}")


def _section(data: dict, key: str, path: str, what: str) -> dict:
    if key not in data:
        raise TechError(f"technology table {path}: missing {what}")
    if not isinstance(data[key], dict):
        raise TechError(f"technology table {path}: {what} must be a table, got {data[key]!r}")
    return data[key]


def _source(entry: dict, where: str, path: str) -> str:
    source = entry.get("source")
    if not isinstance(source, str) or not source.strip():
        raise TechError(f"technology table {path}: {where}.source is missing (every number names its source)")
    return source


def _parse_op(name: str, entry: dict, path: str) -> Op:
    where = f"ops.{name}"
    _known_keys(entry, OP_KEYS, f"[{where}]", path)
    if "scaling" not in entry:  # (it was taken as linear, in silence)
        raise TechError(f"technology table {path}: {where}.scaling is missing; give one of {', '.join(SCALINGS)}")
    scaling = entry["scaling"]
    if scaling not in SCALINGS:
        raise TechError(f"technology table {path}: {where}.scaling must be one of {', '.join(SCALINGS)}, "
                        f"got {scaling!r}")
    raw = _section(entry, "points_pj", path, f"{where}.points_pj")
    if not raw:
        raise TechError(f"technology table {path}: {where}.points_pj is empty")
    points = sorted((_bits_key(b, f"{where}.points_pj", path), _number(e, f"{where}.points_pj[{b}]", path))
                    for b, e in raw.items())
    if scaling == "constant" and len(points) > 1:
        raise TechError(f"technology table {path}: {where} has scaling = \"constant\" but {len(points)} points "
                        f"({', '.join(str(b) for b, _ in points)} bits); give one point, or a linear/quadratic scaling")
    for (b0, e0), (b1, e1) in zip(points, points[1:]):
        if b0 == b1:  # keys "8" and "08": one width given twice
            raise TechError(f"technology table {path}: {where}.points_pj gives {b0} bits twice "
                            f"({', '.join(repr(k) for k in raw if int(k) == b0)})")
        if e1 < e0:
            raise TechError(f"technology table {path}: {where}.points_pj must not decrease as bits grow "
                            f"({b0} bits: {e0} pJ, {b1} bits: {e1} pJ)")
    return Op(name, scaling, tuple(points), _source(entry, where, path))


def _parse_memory(name: str, entry, path: str) -> MemoryLevel:
    where = f"memory.{name}"
    if not isinstance(entry, dict):
        raise TechError(f"technology table {path}: [{where}] must be a table, got {entry!r}")
    _known_keys(entry, MEMORY_KEYS, f"[{where}]", path)
    for key in ("energy_pj", "word_bits"):
        if key not in entry:
            raise TechError(f"technology table {path}: missing {where}.{key}")
    energy = _number(entry["energy_pj"], f"{where}.energy_pj", path)
    word = _bits(entry["word_bits"], f"{where}.word_bits", path)
    return MemoryLevel(name, energy, word, _source(entry, where, path))


def parse_table(data: dict, path: str = "<table>") -> Technology:
    """Validate a table already read from TOML (a dict) and build a :class:`Technology`."""
    _known_keys(data, TABLE_KEYS, "the top level", path)
    ops_section = _section(data, "ops", path, "[ops]")
    ops = {}
    for name in REQUIRED_OPS:
        if name not in ops_section:
            raise TechError(f"technology table {path}: missing [ops.{name}] (required: {', '.join(REQUIRED_OPS)})")
        ops[name] = _parse_op(name, _section(ops_section, name, path, f"[ops.{name}]"), path)
    for name in ops_section:
        if name not in ops:  # extra operations are kept (and validated) for the user's own use
            ops[name] = _parse_op(name, _section(ops_section, name, path, f"[ops.{name}]"), path)
    memory_section = _section(data, "memory", path, "[memory] (at least one memory level)")
    if not memory_section:
        raise TechError(f"technology table {path}: [memory] has no levels")
    memories = {name: _parse_memory(name, entry, path) for name, entry in memory_section.items()}
    aliases = data.get("aliases", {})
    if not isinstance(aliases, dict):
        raise TechError(f"technology table {path}: [aliases] must be a table, got {aliases!r}")
    for alias, target in aliases.items():
        if alias in memories:  # a lookup tries aliases first, so the level would be out of reach
            raise TechError(f"technology table {path}: aliases.{alias} has the name of the memory level {alias!r}, "
                            f"which it would hide; expected an alias named unlike every level")
        if target not in memories:
            raise TechError(f"technology table {path}: aliases.{alias} names unknown memory level {target!r}; "
                            f"expected one of {', '.join(sorted(memories))}")
    neuron = _section(data, "neuron", path, "[neuron]")
    _known_keys(neuron, NEURON_KEYS, "[neuron]", path)
    for key in ("pbit_random_bits", "noise_random_bits"):
        if key not in neuron:
            raise TechError(f"technology table {path}: missing neuron.{key}")
    _source(neuron, "neuron", path)
    return Technology(
        name=str(data.get("name", Path(path).stem)),
        description=str(data.get("description", "")),
        source=str(data.get("source", "")),
        path=str(path),
        ops=ops,
        memories=memories,
        aliases=dict(aliases),
        pbit_random_bits=_bits(neuron["pbit_random_bits"], "neuron.pbit_random_bits", path),
        noise_random_bits=_bits(neuron["noise_random_bits"], "neuron.noise_random_bits", path),
    )


def available_tables() -> list[str]:
    """Names of the tables shipped with pdnn (usable as ``load_table(name)``)."""
    folder = resources.files(__package__) / "tables"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_table(table: str | Path | None = None) -> Technology:
    """Load a technology table: ``None`` (the default 45 nm table), a shipped table's name, or
    the path of a TOML file."""
    table = DEFAULT_TABLE if table is None else table
    shipped = resources.files(__package__) / "tables" / f"{table}.toml"
    if isinstance(table, str) and "/" not in table and not table.endswith(".toml") and shipped.is_file():
        text, path = shipped.read_text(), f"{table} (shipped)"
    else:
        file = Path(table)
        if not file.is_file():
            raise TechError(f"technology table {file} {'is a folder' if file.is_dir() else 'does not exist'}; "
                            "pass a TOML file or one of "
                            f"{', '.join(available_tables())}")
        try:
            text, path = file.read_text(encoding="utf-8"), str(file)
        except UnicodeDecodeError as err:
            raise TechError(f"technology table {file} is not a UTF-8 text (TOML) file ({err})") from err
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise TechError(f"technology table {path} is not valid TOML ({err})") from err
    return parse_table(data, path)
