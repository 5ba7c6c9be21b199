"""The fixed-point p-DNN, its generators and its RTL (Amaranth simulator), on small layers."""
from __future__ import annotations

import gc
import json
import math
import os
import re
import shutil
import warnings

import numpy as np
import pytest
from amaranth.sim import Simulator

from pdnn.errors import UsageError
from pdnn.hw import fixed, rng, rtl, sim, synth


def small_net(seed=0, sizes=(12, 6, 5, 3), random_bits=4, arrangement="per-neuron", max_samples=8) -> fixed.FixedNet:
    """A random network the core can run: a MAC layer, AC layers, an output layer with bias row."""
    r = np.random.default_rng(seed)
    wb = 5
    net = fixed.FixedNet([], input_bits=8, weight_bits=wb, random_bits=random_bits, max_samples=max_samples,
                         rng=arrangement)
    lim = 2 ** (wb - 1) - 1
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = k == len(sizes) - 2
        w = r.integers(-lim, lim + 1, size=(n_out, n_in + (1 if last else 0)))
        net.layers.append(fixed.Layer(w, None, "mac" if k == 0 else "ac"))
    for k, layer in enumerate(net.hidden):  # (once every layer is in place: a table's width depends on its place)
        scale = 3.0 / (math.sqrt(layer.n_in) * lim * (255 if k == 0 else 1))
        layer.thresholds = fixed.thresholds_for(scale, r.normal(0, 0.5, layer.n_out), random_bits,
                                                net.threshold_bits(k))
    return net


def run(dut, bench):
    s = Simulator(dut)
    s.add_clock(1e-8)
    s.add_testbench(bench)
    s.run()


def test_xorshift32_known_value_and_rtl_agree():
    # Marsaglia's xorshift32 from 1: 270369, 67634689, ...
    assert rng.states(np.array([1], dtype=np.uint32), 0, 3)[:, 0].tolist() == [1, 270369, 67634689]
    gen = rtl.Xorshift32(2463534242)
    got = []

    async def bench(ctx):
        ctx.set(gen.en, 1)
        for _ in range(50):
            got.append(ctx.get(gen.state))
            await ctx.tick()

    run(gen, bench)
    assert got == rng.states(np.array([2463534242], dtype=np.uint32), 0, 50)[:, 0].tolist()


@pytest.mark.parametrize("kind", ["mac", "ac"])
def test_units_accumulate_exactly(kind):
    r = np.random.default_rng(1)
    n, bw = 16, 6
    unit = rtl.MACUnit(8, bw, n) if kind == "mac" else rtl.ACUnit(bw, n)
    assert unit.acc_bits == (8 + bw + 4 if kind == "mac" else bw + 4)
    wmax, xmax = 2 ** (bw - 1) - 1, 255 if kind == "mac" else 1
    x = r.integers(0, xmax + 1, size=(3, n))
    w = r.integers(-wmax, wmax + 1, size=(3, n))
    # the extremes of symmetric weights (as exported: the code -2**(bw-1) never occurs), n a power of two
    x = np.concatenate([x, np.full((3, n), xmax), np.zeros((1, n), dtype=x.dtype)])
    w = np.concatenate([w, np.full((1, n), wmax), np.full((2, n), -wmax), np.full((1, n), -wmax)])
    got = []

    async def bench(ctx):
        for xs, ws in zip(x, w):
            ctx.set(unit.clear, 1)
            await ctx.tick()
            ctx.set(unit.clear, 0)
            ctx.set(unit.en, 1)
            for a, b in zip(xs.tolist(), ws.tolist()):
                ctx.set(unit.x, a)
                ctx.set(unit.w, b)
                await ctx.tick()
            ctx.set(unit.en, 0)
            got.append(ctx.get(unit.acc))

    run(unit, bench)
    signed = x if kind == "mac" else 2 * x - 1
    assert got == (signed * w).sum(1).tolist()
    most = n * wmax * xmax  # the extremes fit the stated accumulator width
    assert fixed.signed_bits(-most, most) <= unit.acc_bits and max(map(abs, got)) == most


def test_threshold_table_gives_tanh_probability_to_random_bits():
    # P(+1) = #{k: acc > t_k} / 2**b_u must equal (1 + tanh(s*acc + c)) / 2 within one level (2**-b_u)
    bits, scale, offset = 6, 0.01, np.array([0.3])
    t = fixed.thresholds_for(scale, offset, bits, 20)
    acc = np.arange(-600, 601)
    p = (acc[:, None] > t[0][None, :]).mean(1)
    exact = (1 + np.tanh(scale * acc + offset[0])) / 2
    assert np.abs(p - exact).max() <= 2.0**-bits


def test_shared_taps_are_distinct_and_uniform_enough():
    taps = rng.tap_triples(0, 20, 8)
    assert len({tuple(t) for t in taps.reshape(-1, 3)}) == 160
    u = rng.random_indices("shared", 0, 20, 8, 0, 4000)
    # each neuron's number is uniform on 0..255: its mean is 127.5 with std 73.9/sqrt(4000) = 1.17
    assert np.abs(u.mean(0) - 127.5).max() < 5 * 73.9 / math.sqrt(4000)


def _rank_gf2(masks) -> int:
    rank, rows = 0, [int(m) for m in masks]
    for bit in range(32):
        pivot = next((r for r in rows if r >> bit & 1), None)
        if pivot is not None:
            rows = [r ^ pivot if r >> bit & 1 else r for r in rows if r is not pivot]
            rank += 1
    return rank


@pytest.mark.parametrize("layer, neurons, bits, known", [(1, 16, 12, 11), (0, 170, 9, 166), (2, 64, 8, 62)])
def test_each_neuron_s_shared_taps_reach_every_random_number(layer, neurons, bits, known):
    """Each neuron's random number is a linear map of the 32-bit state: it takes all 2**bits
    values only if its bits' triples are independent over GF(2). Neuron ``known`` drew a
    dependent triple before (its number took half of the values, P(+1) off by up to 0.03)."""
    taps = rng.tap_triples(layer, neurons, bits)
    masks = (1 << taps).sum(-1)  # [neurons, bits] state-bit masks
    assert all(_rank_gf2(row) == bits for row in masks)
    u = rng.random_indices("shared", layer, neurons, bits, 0, 2 ** (bits + 4))[:, known]  # 16 draws a value
    assert len(np.unique(u)) > 2 ** bits * 0.99  # a dependent map reaches at most half


def test_shared_taps_leave_some_pairs_of_neurons_dependent_as_documented():
    """docs/hardware.md's figures for the shared generator's limit (R167): 12 of layer 0's 2016
    pairs of 64 neurons have dependent taps together, and neurons 0 and 38 fire correlated."""
    masks = (1 << rng.tap_triples(0, 64, 8)).sum(-1)
    dependent = [(i, j) for i in range(64) for j in range(i + 1, 64) if _rank_gf2([*masks[i], *masks[j]]) < 16]
    assert len(dependent) == 12 and (0, 38) in dependent
    fires = rng.random_indices("shared", 0, 64, 8, 0, 2**16)[:, [0, 38]] < 32  # P(+1) = 1/8
    assert np.corrcoef(fires[:, 0], fires[:, 1])[0, 1] > 5 / math.sqrt(2**16)


def test_shared_taps_use_every_triple_once_before_any_twice():
    """620 neurons of 8 bits need all 4960 triples: the search near exhaustion keeps drawing while
    an untried independent triple remains (an escape after 1000 draws had reused three early)."""
    taps = rng.tap_triples(0, 620, 8)
    assert len({tuple(t) for t in taps.reshape(-1, 3).tolist()}) == 4960
    assert all(_rank_gf2(row) == 8 for row in (1 << taps).sum(-1))
    with pytest.raises(UsageError, match="1..31 random bits"):
        rng.tap_triples(0, 1, 32)


@pytest.mark.parametrize("arrangement", ["per-neuron", "shared"])
def test_pbit_layer_rtl_matches_reference_bit_for_bit(arrangement):
    net = small_net(arrangement=arrangement, sizes=(12, 10, 8, 3))
    vectors = np.random.default_rng(2).choice([-1, 1], size=(40, 10))
    got = sim.simulate_layer(net, 1, vectors)
    want = fixed.layer_sample(net, 1, vectors, 0)
    assert (got == want).all()
    assert 0 < (want > 0).mean() < 1  # the layer actually samples


@pytest.mark.parametrize("samples", [1, 3])
def test_core_rtl_matches_reference_totals(samples):
    net = small_net(seed=3)
    images = np.random.default_rng(4).integers(0, 256, size=(4, 12))
    totals, decisions, cycles = sim.simulate_core(net, images, samples)
    ref_totals, ref_decisions = fixed.reference(net, images, samples)
    assert (totals == ref_totals).all() and (decisions == ref_decisions).all()
    assert cycles > 4 * (12 + samples * (6 + 5))


def test_every_simulator_names_images_that_do_not_fit_the_core(tmp_path):
    """The Python simulator ran off the end of its image memory (an IndexError) where the
    reference and Icarus named the mismatch."""
    net = small_net(seed=3)
    wide, hot = np.zeros((2, 13), dtype=np.int64), np.full((2, 12), 256)
    simulators = [sim.simulate_core, fixed.reference]
    if shutil.which("iverilog") and shutil.which("vvp"):
        simulators.append(lambda n, images, t: sim.simulate_core_verilog(n, images, t, tmp_path))
    for simulate in simulators:
        with pytest.raises(UsageError, match="images have 13 values each; the network expects 12"):
            simulate(net, wide, 1)
        with pytest.raises(UsageError, match="pixels must be 8-bit unsigned integers"):
            simulate(net, hot, 1)


def test_memory_files_round_trip_and_reject_corruption(tmp_path):
    net = small_net()
    fixed.save(net, tmp_path)
    again = fixed.load(tmp_path)
    images = np.random.default_rng(5).integers(0, 256, size=(6, 12))
    assert (fixed.reference(net, images, 4)[0] == fixed.reference(again, images, 4)[0]).all()
    path = tmp_path / "layer1_weights.mem"
    original = path.read_text()
    path.write_text(original.replace("\n", "\nzz\n", 1))
    with pytest.raises(ValueError, match="layer1_weights.mem:2: 'zz' is not a hexadecimal word"):
        fixed.load(tmp_path)
    # nor what Python's int(., 16) took but $readmemh does not read so (R239)
    for word in ("0x7", "+7", "-1"):
        path.write_text(path.read_text().replace("zz", word, 1))
        with pytest.raises(ValueError, match=re.escape(f"layer1_weights.mem:2: '{word}' is not a hexadecimal word")):
            fixed.load(tmp_path)
        path.write_text(path.read_text().replace(word, "zz", 1))
    path.write_text("0_" + original)  # an underscore after the first digit is read, as $readmemh reads it
    assert np.array_equal(fixed.load(tmp_path).layers[1].weights, again.layers[1].weights)
    # a file that is not text is named, not blamed on spec.json (R212), nor is a non-ASCII digit read as a number
    for damaged, byte in ((b"\xff\xfe00\n", 0), ("0\n\u0661\n".encode(), 2)):
        path.write_bytes(damaged)
        with pytest.raises(UsageError, match=f"layer1_weights.mem is not a memory file \\(byte {byte} is not ASCII"):
            fixed.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="pdnn hw export"):
        fixed.load(tmp_path / "missing")


@pytest.mark.parametrize("edit, message", [
    (lambda layers: layers[:1], "at least two layers"),
    (lambda layers: [{**layers[0], "kind": "ac"}, *layers[1:]], "layer 0 has kind 'ac'; expected a 'mac' first"),
    (lambda layers: [layers[0], {**layers[1], "kind": "foo"}, *layers[2:]], "layer 1 has kind 'foo'"),
    (lambda layers: [*layers[:-1], {**layers[-1], "thresholds": "t.mem"}], "has thresholds; expected them on every"),
    (lambda layers: [{**layers[0], "thresholds": None}, *layers[1:]], "layer 0 lacks thresholds"),
    (lambda layers: [*layers[:-1], {**layers[-1], "n_in": layers[-2]["n_out"]}], "plus the bias row"),
    (lambda layers: [layers[0], {**layers[1], "n_in": 0}, *layers[2:]], "layer 1 n_in"),
    (lambda layers: [{**layers[0], "accumulator_bits": 30}, *layers[1:]],
     "layer 0 states accumulator_bits 30; the core computes it with"),
])
def test_an_export_the_core_cannot_be_built_from_is_named(tmp_path, edit, message):
    fixed.save(small_net(), tmp_path)
    spec = json.loads((tmp_path / fixed.SPEC).read_text())
    (tmp_path / fixed.SPEC).write_text(json.dumps({**spec, "layers": edit(spec["layers"])}))
    with pytest.raises(UsageError, match=message):
        fixed.load(tmp_path)


def test_an_export_s_meta_is_an_object_or_null(tmp_path):
    fixed.save(small_net(), tmp_path)
    spec = json.loads((tmp_path / fixed.SPEC).read_text())
    (tmp_path / fixed.SPEC).write_text(json.dumps({**spec, "meta": None}))
    assert fixed.load(tmp_path).meta == {}
    (tmp_path / fixed.SPEC).write_text(json.dumps({**spec, "meta": ["cifar10"]}))
    with pytest.raises(UsageError, match=r"spec.json: meta must be an object .*, got \['cifar10'\]"):
        fixed.load(tmp_path)


def test_thresholds_stated_wider_than_the_core_s_are_refused(tmp_path):
    """The tables are parsed at the width spec.json states; the core's ROMs hold its own width,
    and truncated every threshold (every image's totals differed)."""
    net = small_net()
    fixed.save(net, tmp_path)
    spec = json.loads((tmp_path / fixed.SPEC).read_text())
    spec["layers"][0]["threshold_bits"] = net.threshold_bits(0) + 10
    path = tmp_path / spec["layers"][0]["thresholds"]
    path.write_text(fixed._hex_lines(net.layers[0].thresholds * 1000, net.threshold_bits(0) + 10))
    (tmp_path / fixed.SPEC).write_text(json.dumps(spec))
    with pytest.raises(UsageError, match=rf"layer 0 states threshold_bits {net.threshold_bits(0) + 10}; "
                                         rf"the core computes it with {net.threshold_bits(0)}"):
        fixed.load(tmp_path)


def test_one_class_is_refused_by_the_export_and_the_core(tmp_path):
    """The decision port of one class has no bits: Icarus left it undriven ('z', a traceback)."""
    net = small_net(sizes=(12, 6, 5, 1))
    with pytest.raises(UsageError, match="the output layer has n_out 1; the core decides among at least two"):
        fixed.save(net, tmp_path / "export")
    assert not (tmp_path / "export").exists()
    with warnings.catch_warnings():  # the refused core is an elaboratable never elaborated
        warnings.simplefilter("ignore")
        with pytest.raises(UsageError, match="at least two classes; the output layer has 1"):
            rtl.Core(net)
        gc.collect()


def test_reference_rejects_bad_input():
    net = small_net()
    with pytest.raises(ValueError, match=r"samples T must be in 1..8"):
        fixed.reference(net, np.zeros((1, 12)), 0)
    with pytest.raises(ValueError, match="expects 12"):
        fixed.reference(net, np.zeros((1, 13)), 1)
    with pytest.raises(ValueError, match="8-bit unsigned"):
        fixed.reference(net, np.full((1, 12), 256), 1)


def test_a_cut_core_clips_its_tables_to_its_narrower_accumulator():
    """Cutting a layer's inputs narrows its accumulator and its threshold memory: tables kept as
    they were wrapped in the RTL (a threshold never reached became one always passed) and in the
    memory files, unlike the reference."""
    from pdnn.experiments.hardware_study import cut
    net = small_net(seed=3, sizes=(12, 8, 8, 3))
    bits = net.threshold_bits(1)
    r = np.random.default_rng(6)
    net.layers[1].thresholds = np.sort(r.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), size=(8, 16)), axis=1)
    small = cut(net, 2)
    bits = small.threshold_bits(1)
    assert -(2 ** (bits - 1)) <= small.layers[1].thresholds.min() < small.layers[1].thresholds.max() < 2 ** (bits - 1)
    images = r.integers(0, 256, size=(6, 12))
    totals, decisions, _ = sim.simulate_core(small, images, 3)
    ref_totals, ref_decisions = fixed.reference(small, images, 3)
    assert (totals == ref_totals).all() and (decisions == ref_decisions).all()
    with pytest.raises(UsageError, match=f"layer 1 has a threshold outside .* the {bits}-bit table"):
        fixed.FixedNet([small.layers[0], fixed.Layer(small.layers[1].weights, net.layers[1].thresholds[:2], "ac"),
                        small.layers[2]], 8, small.weight_bits, small.random_bits, small.max_samples)


def test_a_failing_simulator_or_synthesiser_is_named_in_one_line(tmp_path, monkeypatch, capsys):
    """A failing Icarus or Yosys run was a traceback with exit status 1, which `pdnn hw sim` also
    gives when the RTL differs from the reference."""
    from pdnn.cli import main
    from pdnn.errors import ToolError
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("iverilog", "vvp"):
        (tools / tool).write_text("#!/bin/sh\necho 'unsupported -g2012' >&2\nexit 3\n")
        (tools / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:{os.environ['PATH']}")
    with pytest.raises(ToolError, match=r"iverilog failed \(exit 3\): unsupported -g2012"):
        sim.simulate_core_verilog(small_net(), np.zeros((1, 12), dtype=np.int64), 1, tmp_path / "work")

    def failing(*args, **kwargs):
        raise ToolError("yosys failed (exit 1): ERROR: out of memory")

    monkeypatch.setattr(synth, "yosys", failing)  # (the unit is converted first, as in a real run)
    assert main(["hw", "synth", "--part", "ac", "--weight-bits", "4", "--n", "16"]) == 2
    assert capsys.readouterr().err == "pdnn hw synth: error: yosys failed (exit 1): ERROR: out of memory\n"


def test_distributed_ram_counts_as_the_luts_it_is_built_of():
    """A Xilinx RAM32M is four of a SLICEM's LUTs, not a block RAM (it had been counted as one)."""
    cells = {"LUT6": 10, "RAM32M": 2, "RAM64X1D": 1, "RAMB18E1": 1, "FDRE": 3, "CARRY4": 2}
    assert synth.resources(cells, "xilinx") == {"lut": 10 + 2 * 4 + 2, "ff": 3, "carry": 2, "mux": 0, "ram": 1}
    assert synth.resources({"SB_LUT4": 5, "SB_RAM40_4K": 2}, "ice40") == {"lut": 5, "ff": 0, "carry": 0, "mux": 0,
                                                                          "ram": 2}
