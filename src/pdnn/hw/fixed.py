"""The fixed-point p-DNN the hardware runs, its memory files, and its bit-exact reference (numpy).

Datapath (an MLP: ``depth`` hidden p-bit layers and a linear output layer):

* layer 0 multiplies the ``input_bits``-bit unsigned pixels by ``weight_bits``-bit signed
  weights and accumulates (MAC); it is computed once per image (the deterministic prefix);
* every later layer reads +-1 bits and adds or subtracts its weights (AC);
* a hidden neuron fires +1 when its sum exceeds ``thresholds[i, u]``, ``u`` being a
  ``random_bits``-bit random number: the table holds ``atanh`` of the ``2**b_u`` uniform levels
  in accumulator units, with the layer's bias, batch norm and the input normalisation folded in,
  so ``P(+1) = (1 + tanh(beta * y)) / 2`` to ``b_u`` bits (no multiplier, no per-neuron adder);
* the output layer's bias is one more weight row whose input is always +1; its sums are added
  over the T samples and the decision is the first class with the largest total.

Every value is an integer; :func:`reference` computes exactly what the RTL computes.
"""
from __future__ import annotations

import json
import math
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..checks import positive_int
from ..errors import UsageError
from ..io import CONFIG, RunError, read_json, signals_held, staging_folder
from . import rng

SPEC = "spec.json"
FORMAT = "pdnn-hw-1"


def signed_bits(lo: int, hi: int) -> int:
    """Bits of the smallest two's-complement type holding ``lo..hi``."""
    bits = 1
    while not (-(2 ** (bits - 1)) <= lo and hi <= 2 ** (bits - 1) - 1):
        bits += 1
    return bits


@dataclass
class Layer:
    """One weight layer. ``weights`` is ``[n_out, n_in]`` (the output layer's last column is its
    bias); ``thresholds`` is ``[n_out, 2**random_bits]`` for hidden layers, ``None`` for the output."""

    weights: np.ndarray
    thresholds: np.ndarray | None
    kind: str  # "mac" (multi-bit input) or "ac" (one-bit input)

    @property
    def n_out(self) -> int:
        return self.weights.shape[0]

    @property
    def n_in(self) -> int:
        return self.weights.shape[1]


@dataclass
class FixedNet:
    layers: list[Layer]
    input_bits: int = 8
    weight_bits: int = 8
    random_bits: int = 8
    max_samples: int = 64
    rng: str = "per-neuron"
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        rng.check_arrangement(self.rng)
        self.check_ranges()

    def check_ranges(self) -> None:
        """Refuse a weight or threshold its memory's width would wrap."""
        for k, layer in enumerate(self.layers):
            wmax = 2 ** (self.weight_bits - 1) - 1
            if layer.weights.size and np.abs(layer.weights).max() > wmax:
                raise UsageError(f"layer {k} has a weight outside +-{wmax} ({self.weight_bits}-bit)")
            if layer.thresholds is not None and layer.thresholds.size:  # a table's memory would wrap it
                bits = self.threshold_bits(k)
                low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
                if layer.thresholds.min() < low or layer.thresholds.max() > high:
                    raise UsageError(f"layer {k} has a threshold outside {low}..{high}, the {bits}-bit table its "
                                     f"accumulator needs (clip it: an accumulator never passes those bounds)")

    @property
    def hidden(self) -> list[Layer]:
        return self.layers[:-1]

    def acc_bits(self, k: int) -> int:
        """Accumulator width of layer ``k``: enough for any input, as the RTL sizes it."""
        layer = self.layers[k]
        wmax = 2 ** (self.weight_bits - 1) - 1
        if layer.kind == "mac":
            most = layer.n_in * wmax * (2**self.input_bits - 1)
        elif k == len(self.layers) - 1:
            most = layer.n_in * wmax * self.max_samples
        else:
            most = layer.n_in * wmax
        return signed_bits(-most, most)

    def threshold_bits(self, k: int) -> int:
        return self.acc_bits(k) + 1

    def describe(self) -> dict:
        """The bit widths and shapes, as ``spec.json`` states them."""
        return {
            "format": FORMAT,
            "input_bits": self.input_bits,
            "weight_bits": self.weight_bits,
            "random_bits": self.random_bits,
            "max_samples": self.max_samples,
            "rng": self.rng,
            "layers": [
                {
                    "kind": layer.kind,
                    "n_in": layer.n_in,
                    "n_out": layer.n_out,
                    "accumulator_bits": self.acc_bits(k),
                    "weights": f"layer{k}_weights.mem",
                    "threshold_bits": None if layer.thresholds is None else self.threshold_bits(k),
                    "thresholds": None if layer.thresholds is None else f"layer{k}_thresholds.mem",
                }
                for k, layer in enumerate(self.layers)
            ],
            "meta": self.meta,
        }


def _hex_lines(values: np.ndarray, bits: int) -> str:
    digits = (bits + 3) // 4
    mask = (1 << bits) - 1
    return "".join(f"{int(v) & mask:0{digits}x}\n" for v in values.reshape(-1))


_HEX_WORD = re.compile(r"[0-9a-fA-F][0-9a-fA-F_]*")  # (Verilog numbers may hold _ after the first digit)


def _parse_hex(text: str, bits: int, path: Path) -> np.ndarray:
    out = []
    for number, line in enumerate(text.split(), 1):
        if not _HEX_WORD.fullmatch(line):  # (int(line, 16) took 0x7f, +7f and -1, which $readmemh does not)
            raise UsageError(f"{path}:{number}: {line!r} is not a hexadecimal word")
        v = int(line.replace("_", ""), 16)
        if v >> bits:
            raise UsageError(f"{path}:{number}: {line!r} is wider than {bits} bits")
        out.append(v - (1 << bits) if v >> (bits - 1) else v)
    return np.array(out, dtype=np.int64)


def save(net: FixedNet, folder: Path | str) -> list[Path]:
    """Write ``spec.json`` and one ``$readmemh``-style file per memory (one two's-complement word
    a line: weights in ``[output][input]`` order, thresholds in ``[neuron][random value]`` order).

    The files are written into a hidden folder inside ``folder`` (the same file system, however
    ``folder`` is linked or mounted) and then moved into place together, replacing an earlier
    export's files (those its ``spec.json`` names; no other file is touched): an interruption
    while they are written leaves the earlier export whole."""
    folder = Path(folder)
    net.check_ranges()
    spec = net.describe()
    _check_structure(folder / SPEC, spec["layers"])  # what load would refuse is never written
    folder.mkdir(parents=True, exist_ok=True)
    memories = {}
    for layer, desc in zip(net.layers, spec["layers"]):
        memories[desc["weights"]] = (layer.weights, net.weight_bits)
        if layer.thresholds is not None:
            memories[desc["thresholds"]] = (layer.thresholds, desc["threshold_bits"])
    if (foreign := [name for name in memories if (folder / name).exists()]) and not is_export(folder):
        raise UsageError(f"{folder} holds {', '.join(foreign)} but no export (no spec.json of one): files of "
                         "another's, which an export would overwrite; export into another folder")
    earlier = _memory_names(folder / SPEC) - set(memories)
    with staging_folder(folder / SPEC) as staging:
        for name, (values, bits) in memories.items():
            (staging / name).write_text(_hex_lines(values, bits))
        (staging / SPEC).write_text(json.dumps(spec, indent=2) + "\n")
        with signals_held():
            (folder / SPEC).unlink(missing_ok=True)  # first out, last in: a folder with one is a complete export
            for name in earlier:
                (folder / name).unlink(missing_ok=True)
            for name in [*memories, SPEC]:
                os.replace(staging / name, folder / name)
    return [folder / SPEC, *(folder / name for name in memories)]


def _memory_names(spec_path: Path) -> set[str]:
    """The memory files an earlier export's ``spec.json`` names (none if it is not an export's);
    only plain ``*.mem`` names in its folder, whatever a damaged spec says."""
    try:
        layers = json.loads(spec_path.read_text())["layers"]
        names = {layer.get(key) for layer in layers for key in ("weights", "thresholds")}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()
    return {n for n in names if isinstance(n, str) and n == Path(n).name and n.endswith(".mem")}


def is_export(folder: Path | str) -> bool:
    """Whether ``folder`` holds an export's spec.json (a study's folder has a spec.json too)."""
    try:
        document = read_json(Path(folder) / SPEC)
    except RunError:
        return False
    return isinstance(document, dict) and document.get("format") == FORMAT


def load(folder: Path | str) -> FixedNet:
    folder = Path(folder)
    path = folder / SPEC
    if not path.is_file():
        if (folder / CONFIG).is_file():  # a trained run: an export goes into a folder of its own
            raise FileNotFoundError(f"{folder} is a run directory, not an export; export it first with "
                                    f"`pdnn hw export {shlex.quote(str(folder))} --out "
                                    f"{shlex.quote(str(folder.absolute()) + '-hw')}` and give that folder")
        if folder.exists() and not folder.is_dir():  # (export refuses a file as its --out)
            raise FileNotFoundError(f"{folder} is a file; expected the folder of an export "
                                    "(`pdnn hw export RUN --out DIR`)")
        raise FileNotFoundError(f"{path} not found; create it with `pdnn hw export RUN --out {folder}`")
    spec = read_json(path)
    try:
        return _from_spec(folder, path, spec)
    except UsageError:
        raise
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise UsageError(f"{path} is not a complete export ({type(err).__name__}: {err}); "
                         f"export it again with `pdnn hw export RUN --out {folder} --force`") from None


def _from_spec(folder: Path, path: Path, spec: dict) -> FixedNet:
    if spec.get("format") != FORMAT:
        raise UsageError(f"{path} has format {spec.get('format')!r}; expected {FORMAT!r}")
    for key in ("input_bits", "weight_bits", "random_bits", "max_samples"):
        positive_int(f"{key} in {path}", spec[key])
    _check_structure(path, spec["layers"])
    layers = []
    for k, desc in enumerate(spec["layers"]):
        w = _parse_hex(_memory_text(folder / desc["weights"]), spec["weight_bits"], folder / desc["weights"])
        if w.size != desc["n_in"] * desc["n_out"]:
            raise UsageError(f"{folder / desc['weights']} has {w.size} words; expected {desc['n_out']} x {desc['n_in']}")
        t = None
        if desc["thresholds"] is not None:
            tp = folder / desc["thresholds"]
            t = _parse_hex(_memory_text(tp), desc["threshold_bits"], tp)
            if t.size != desc["n_out"] * 2 ** spec["random_bits"]:
                raise UsageError(f"{tp} has {t.size} words; expected {desc['n_out']} x {2 ** spec['random_bits']}")
            t = t.reshape(desc["n_out"], -1)
        layers.append(Layer(w.reshape(desc["n_out"], desc["n_in"]), t, desc["kind"]))
    meta = spec.get("meta") or {}  # (null where a network was never exported from a run)
    if not isinstance(meta, dict):
        raise UsageError(f"{path}: meta must be an object (what the export was made from), got {meta!r}")
    widths = (spec["input_bits"], spec["weight_bits"], spec["random_bits"], spec["max_samples"], spec["rng"])
    sized = FixedNet([Layer(layer.weights, None, layer.kind) for layer in layers], *widths)  # tables checked below
    for k, (layer, stated) in enumerate(zip(layers, spec["layers"])):
        own = {"accumulator_bits": sized.acc_bits(k),
               "threshold_bits": None if layer.thresholds is None else sized.threshold_bits(k)}
        for key, bits in own.items():  # the core is built at its own widths
            if stated[key] != bits:
                raise UsageError(f"{path}: layer {k} states {key} {stated[key]!r}; the core computes it with "
                                 f"{bits} (from the layer's size and the bit widths): the tables would not fit")
    return FixedNet(layers, *widths, meta)


def _memory_text(path: Path) -> str:
    """A memory file's text; one that is not text is named (its decoding error was blamed on
    spec.json)."""
    try:
        return path.read_text(encoding="ascii")
    except UnicodeDecodeError as err:
        raise UsageError(f"{path} is not a memory file (byte {err.start} is not ASCII text); export again with "
                         f"`pdnn hw export RUN --out {path.parent} --force`") from None


def _check_structure(path: Path, layers) -> None:
    """What the core is built for: a MAC layer, then AC layers, at least two in all; thresholds
    on the hidden layers only; each layer fed by the one before (the output layer's bias row
    one more input)."""
    if not isinstance(layers, list) or len(layers) < 2:
        raise UsageError(f"{path}: 'layers' must list at least two layers (a hidden and the output one), "
                         f"got {layers!r:.80}")
    for k, desc in enumerate(layers):
        kind, last = desc["kind"], k == len(layers) - 1
        if kind != ("mac" if k == 0 else "ac"):
            raise UsageError(f"{path}: layer {k} has kind {kind!r}; expected a 'mac' first layer and 'ac' ones after")
        if (desc["thresholds"] is None) != last:
            raise UsageError(f"{path}: layer {k} {'has' if last else 'lacks'} thresholds; expected them on every "
                             "hidden layer and not on the output layer")
        for key in ("n_in", "n_out"):
            positive_int(f"layer {k} {key} in {path}", desc[key])
        if last and desc["n_out"] < 2:
            raise UsageError(f"{path}: the output layer has n_out {desc['n_out']}; the core decides among at least "
                             "two classes")
        if k and desc["n_in"] != layers[k - 1]["n_out"] + last:
            raise UsageError(f"{path}: layer {k} has n_in {desc['n_in']}; expected {layers[k - 1]['n_out'] + last}, "
                             f"the n_out of layer {k - 1}" + (" plus the bias row" if last else ""))


def fire(acc: np.ndarray, thresholds: np.ndarray, u: np.ndarray) -> np.ndarray:
    """p-bit outputs (+1 / -1) of sums ``acc [..., n]`` for random numbers ``u [..., n]``."""
    t = np.take_along_axis(np.broadcast_to(thresholds, (*u.shape[:-1], *thresholds.shape)),
                           u[..., None], axis=-1)[..., 0]
    return np.where(acc > t, 1, -1)


def layer_sample(net: FixedNet, k: int, bits: np.ndarray, start: int) -> np.ndarray:
    """One AC hidden layer ``k`` on rows of +-1 input bits ``[G, n_in]``; row ``g`` uses sample
    ``start + g`` of the layer's generators. Returns +-1 bits ``[G, n_out]``."""
    layer = net.layers[k]
    acc = bits.astype(np.int64) @ layer.weights.T
    u = rng.random_indices(net.rng, k, layer.n_out, net.random_bits, start, len(bits))
    return fire(acc, layer.thresholds, u)


def check_images(net: FixedNet, images: np.ndarray) -> np.ndarray:
    """``images`` as int64 ``[N, n_in]`` if each has the first layer's number of pixels, each an
    ``input_bits``-bit unsigned integer (every simulator and the reference take them so)."""
    x = np.asarray(images, dtype=np.int64).reshape(len(images), -1)
    if x.shape[1] != net.layers[0].n_in:
        raise UsageError(f"images have {x.shape[1]} values each; the network expects {net.layers[0].n_in}")
    if x.min(initial=0) < 0 or x.max(initial=0) >= 2**net.input_bits:
        raise UsageError(f"pixels must be {net.input_bits}-bit unsigned integers")
    return x


def reference(net: FixedNet, images: np.ndarray, samples: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class totals ``[N, classes]`` (output sums added over the samples) and decisions ``[N]`` for
    ``images`` (uint8, ``[N, n_in]``), sample ``g = start + n * samples + t`` for image n's sample t."""
    if not 1 <= samples <= net.max_samples:
        raise UsageError(f"samples T must be in 1..{net.max_samples} (the core's totals are sized for it), got {samples}")
    x, first = check_images(net, images), net.layers[0]
    n, g = len(x), len(x) * samples
    acc = np.repeat(x @ first.weights.T, samples, axis=0)  # [G, H]: computed once, used T times
    u = rng.random_indices(net.rng, 0, first.n_out, net.random_bits, start, g)
    bits = fire(acc, first.thresholds, u)
    for k in range(1, len(net.layers) - 1):
        bits = layer_sample(net, k, bits, start)
    out = net.layers[-1].weights
    with_bias = np.concatenate([bits, np.ones((g, 1), dtype=np.int64)], axis=1)
    totals = (with_bias @ out.T).reshape(n, samples, -1).sum(1)
    return totals, totals.argmax(1)


def atanh_levels(random_bits: int) -> np.ndarray:
    """``atanh`` of the ``2**b_u`` uniform levels ``u_k = (2k + 1) / 2**b_u - 1``."""
    levels = (2 * np.arange(2**random_bits) + 1) / 2**random_bits - 1
    return np.arctanh(levels)


def thresholds_for(scale: float, offset: np.ndarray, random_bits: int, bits: int) -> np.ndarray:
    """Integer thresholds ``floor((atanh(u_k) - offset_i) / scale)`` clipped to ``bits`` signed bits:
    ``acc > t`` exactly when ``scale * acc + offset > atanh(u_k)`` for integer ``acc``."""
    t = np.floor((atanh_levels(random_bits)[None, :] - offset[:, None]) / scale)
    return np.clip(t, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1).astype(np.int64)


def quantise_rows(w: np.ndarray, bits: int) -> tuple[np.ndarray, float]:
    """Symmetric per-layer quantisation to ``bits`` bits: ``(integers, scale)``."""
    most = float(np.abs(w).max())
    scale = most / (2 ** (bits - 1) - 1) if most > 0 else 1.0
    return np.clip(np.round(w / scale), -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1).astype(np.int64), scale


def ceil_log2(n: int) -> int:
    return max(0, math.ceil(math.log2(n)))
