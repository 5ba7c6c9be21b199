"""Parameterised RTL (Amaranth) for the p-bit datapath: units, neuron, generators, layer and core.

Each class is a small :class:`amaranth.lib.wiring.Component` with typed ports; the tests beside
them (``tests/test_hw.py``) simulate each against :mod:`pdnn.hw.fixed` / :mod:`pdnn.hw.rng`.

* :class:`MACUnit`: one multiply-accumulate lane, ``b_a``-bit unsigned input times ``b_w``-bit
  signed weight into an accumulator of ``b_a + b_w + ceil(log2 n)`` bits (sync clear, enable);
* :class:`ACUnit`: one accumulate lane: a 1-bit input adds (1) or subtracts (0) the weight, into
  ``b_w + ceil(log2 n)`` bits;
* :class:`Xorshift32`: a 32-bit xorshift generator stepping on ``en``;
* :class:`PBitNeuron`: a comparator of the sum against a threshold table (ROM) indexed by the
  random number;
* :class:`Dense`: a weight memory with one row per input (all outputs' weights side by side) and
  one lane per output; it streams the rows and tells its parent which input it wants;
* :class:`PBitLayer`: one AC hidden layer with its neurons and generators (for co-simulation);
* :class:`Core`: the whole network: MAC layer once per image, then T samples of the p-bit layers
  and the output layer, totals over the samples and the arg-max.
"""
from __future__ import annotations

import numpy as np

from ..errors import UsageError
from . import fixed, rng

try:
    from amaranth import Cat, Const, Module, Signal, signed, unsigned
    from amaranth.lib.memory import Memory
    from amaranth.lib.wiring import Component, In, Out
except ImportError:  # without the hw extra this module still imports; `pdnn hw` says how to install it
    Component = object


def mac_acc_bits(act_bits: int, weight_bits: int, n: int) -> int:
    return act_bits + weight_bits + fixed.ceil_log2(n)


def ac_acc_bits(weight_bits: int, n: int) -> int:
    """Enough for n symmetric weights, |w| <= 2**(b_w - 1) - 1, as the export quantises them
    (and as :meth:`pdnn.hw.fixed.FixedNet.acc_bits` sizes the core's lanes): the code
    -2**(b_w - 1) never occurs. Subtracted n times, it would need one bit more when n is a
    power of two."""
    return weight_bits + fixed.ceil_log2(n)


class MACUnit(Component):
    """``acc <- 0`` on ``clear``, else ``acc <- acc + x * w`` on ``en``."""

    def __init__(self, act_bits: int, weight_bits: int, n: int, acc_bits: int | None = None):
        self.acc_bits = acc_bits or mac_acc_bits(act_bits, weight_bits, n)
        super().__init__({"clear": In(1), "en": In(1), "x": In(unsigned(act_bits)),
                          "w": In(signed(weight_bits)), "acc": Out(signed(self.acc_bits))})

    def elaborate(self, platform):
        m = Module()
        with m.If(self.clear):
            m.d.sync += self.acc.eq(0)
        with m.Elif(self.en):
            m.d.sync += self.acc.eq(self.acc + self.x * self.w)
        return m


class ACUnit(Component):
    """``acc <- 0`` on ``clear``, else ``acc <- acc + (w if x else -w)`` on ``en``; ``w`` is
    symmetric, never -2**(b_w - 1) (see :func:`ac_acc_bits`)."""

    def __init__(self, weight_bits: int, n: int, acc_bits: int | None = None):
        self.acc_bits = acc_bits or ac_acc_bits(weight_bits, n)
        super().__init__({"clear": In(1), "en": In(1), "x": In(1),
                          "w": In(signed(weight_bits)), "acc": Out(signed(self.acc_bits))})

    def elaborate(self, platform):
        m = Module()
        with m.If(self.clear):
            m.d.sync += self.acc.eq(0)
        with m.Elif(self.en & self.x):
            m.d.sync += self.acc.eq(self.acc + self.w)
        with m.Elif(self.en):
            m.d.sync += self.acc.eq(self.acc - self.w)
        return m


class Xorshift32(Component):
    """``state <- xorshift32(state)`` on ``en``; resets to ``seed``."""

    def __init__(self, seed: int):
        if not 0 < seed < 2**32:
            raise ValueError(f"xorshift32 seed must be in 1..2**32-1, got {seed}")
        self.seed = int(seed)
        super().__init__({"en": In(1), "state": Out(32, init=self.seed)})

    def elaborate(self, platform):
        m = Module()
        a = Signal(32)
        b = Signal(32)
        m.d.comb += [a.eq(self.state ^ (self.state << 13)[:32]), b.eq(a ^ (a >> 17))]
        with m.If(self.en):
            m.d.sync += self.state.eq(b ^ (b << 5)[:32])
        return m


class PBitNeuron(Component):
    """``out = acc > thresholds[u]``: the p-bit's comparator and its threshold ROM."""

    def __init__(self, thresholds, acc_bits: int, random_bits: int):
        t = [int(v) for v in np.asarray(thresholds).reshape(-1)]
        if len(t) != 2**random_bits:
            raise ValueError(f"a {random_bits}-bit neuron needs {2**random_bits} thresholds, got {len(t)}")
        self.table = Memory(shape=signed(acc_bits + 1), depth=len(t), init=t)
        super().__init__({"acc": In(signed(acc_bits)), "u": In(random_bits), "out": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.table = self.table
        port = self.table.read_port(domain="comb")
        m.d.comb += [port.addr.eq(self.u), self.out.eq(self.acc > port.data)]
        return m


def random_numbers(m: Module, name: str, arrangement: str, layer: int, neurons: int, bits: int, step):
    """Add layer ``layer``'s generators to ``m``; return one ``bits``-bit random number per neuron."""
    rng.check_arrangement(arrangement)
    if arrangement == "per-neuron":
        out = []
        for i, seed in enumerate(rng.seeds(layer, neurons)):
            gen = Xorshift32(int(seed))
            m.submodules[f"{name}_rng{i}"] = gen
            m.d.comb += gen.en.eq(step)
            out.append(gen.state[:bits])
        return out
    gen = Xorshift32(int(rng.seeds(layer, 1)[0]))
    m.submodules[f"{name}_rng"] = gen
    m.d.comb += gen.en.eq(step)
    taps = rng.tap_triples(layer, neurons, bits)
    return [Cat(*(gen.state[int(t[0])] ^ gen.state[int(t[1])] ^ gen.state[int(t[2])] for t in taps[i]))
            for i in range(neurons)]


class Dense(Component):
    """A weight memory and one lane per output, streaming the rows 0..n_in-1 after ``start``.

    The row read at ``addr`` arrives one cycle later, when ``step`` is high; ``x`` must then hold
    that row's input (a synchronous memory addressed by ``addr``, or a shift register shifted on
    ``step``). ``done`` is high one cycle after the last step, when the sums are final.
    ``clear`` zeroes the lanes (on or before ``start``).
    """

    def __init__(self, weights: np.ndarray, kind: str, weight_bits: int, acc_bits: int, input_bits: int = 1):
        n_out, n_in = weights.shape
        self.n_in, self.n_out, self.weight_bits = n_in, n_out, weight_bits
        mask = (1 << weight_bits) - 1
        rows = [sum((int(weights[i, j]) & mask) << (i * weight_bits) for i in range(n_out)) for j in range(n_in)]
        self.memory = Memory(shape=n_out * weight_bits, depth=n_in, init=rows)
        if kind == "mac":
            self.lanes = [MACUnit(input_bits, weight_bits, n_in, acc_bits) for _ in range(n_out)]
        elif kind == "ac":
            self.lanes = [ACUnit(weight_bits, n_in, acc_bits) for _ in range(n_out)]
        else:
            raise ValueError(f"lane kind must be 'mac' or 'ac', got {kind!r}")
        super().__init__({"start": In(1), "clear": In(1), "x": In(input_bits), "addr": Out(range(n_in + 1)),
                          "step": Out(1), "done": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.memory = self.memory
        port = self.memory.read_port()
        busy = Signal()
        last = Signal()
        issuing = busy & (self.addr < self.n_in)
        m.d.comb += port.addr.eq(self.addr)
        with m.If(self.start):
            m.d.sync += [self.addr.eq(0), busy.eq(1)]
        with m.Elif(issuing):
            m.d.sync += self.addr.eq(self.addr + 1)
        with m.Elif(busy):
            m.d.sync += busy.eq(0)
        m.d.sync += [self.step.eq(issuing), last.eq(issuing & (self.addr == self.n_in - 1)), self.done.eq(last)]
        for i, lane in enumerate(self.lanes):
            m.submodules[f"lane{i}"] = lane
            bw = self.weight_bits
            m.d.comb += [lane.clear.eq(self.clear), lane.en.eq(self.step), lane.x.eq(self.x),
                         lane.w.eq(port.data[i * bw:(i + 1) * bw].as_signed())]
        return m


def neurons(m: Module, name: str, net: fixed.FixedNet, k: int, dense: Dense, step) -> list:
    """Add hidden layer ``k``'s neurons and generators to ``m``; return their output bits."""
    layer = net.layers[k]
    us = random_numbers(m, name, net.rng, k, layer.n_out, net.random_bits, step)
    bits = []
    for i in range(layer.n_out):
        neuron = PBitNeuron(layer.thresholds[i], net.acc_bits(k), net.random_bits)
        m.submodules[f"{name}_neuron{i}"] = neuron
        m.d.comb += [neuron.acc.eq(dense.lanes[i].acc), neuron.u.eq(us[i])]
        bits.append(neuron.out)
    return bits


class PBitLayer(Component):
    """Hidden AC layer ``k`` of ``net``: on ``start`` it reads the bit vector ``x`` (bit j = input j,
    1 = +1), and when ``done`` pulses ``bits`` holds its p-bit outputs; its generators then step."""

    def __init__(self, net: fixed.FixedNet, k: int):
        layer = net.layers[k]
        if layer.kind != "ac" or layer.thresholds is None:
            raise ValueError(f"layer {k} is not a hidden AC layer")
        self.net, self.k = net, k
        self.dense = Dense(layer.weights, "ac", net.weight_bits, net.acc_bits(k))
        super().__init__({"start": In(1), "x": In(layer.n_in), "bits": Out(layer.n_out), "done": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dense = self.dense
        shift = Signal(self.dense.n_in)
        finished = Signal()
        out = neurons(m, "layer", self.net, self.k, self.dense, finished)
        m.d.comb += [self.dense.start.eq(self.start), self.dense.clear.eq(self.start),
                     self.dense.x.eq(shift[0]), finished.eq(self.dense.done)]
        with m.If(self.start):
            m.d.sync += shift.eq(self.x)
        with m.Elif(self.dense.step):
            m.d.sync += shift.eq(shift >> 1)
        with m.If(finished):
            m.d.sync += self.bits.eq(Cat(*out))
        m.d.sync += self.done.eq(finished)
        return m


class Core(Component):
    """The p-DNN core. Load an image through (``image_addr``, ``image_data``, ``image_we``), set
    ``samples`` (T) and pulse ``start``; when ``done`` pulses, ``decision`` is the class and
    ``totals`` the class totals side by side (two's complement, class 0 in the low bits).

    Layer 0 (MAC) runs once per image; each of the T samples then draws every hidden layer's
    bits, runs the next AC layer, and adds the output layer's sums (with the bias row, input +1)
    to the class totals, which are cleared once per image. Generators step once per sample.
    """

    def __init__(self, net: fixed.FixedNet):
        self.net = net
        first = net.layers[0]
        if first.kind != "mac" or any(layer.kind != "ac" for layer in net.layers[1:]):
            raise ValueError("the core expects a MAC first layer followed by AC layers")
        if net.layers[-1].n_out < 2:  # a decision port of range(1) has no bits, which Verilog cannot declare
            raise UsageError(f"the core decides among at least two classes; the output layer has "
                             f"{net.layers[-1].n_out}")
        net.check_ranges()  # (a table built before its net had all its layers can be sized for another one)
        self.image = Memory(shape=net.input_bits, depth=first.n_in, init=[])
        self.dense = [Dense(layer.weights, layer.kind, net.weight_bits, net.acc_bits(k),
                            net.input_bits if layer.kind == "mac" else 1) for k, layer in enumerate(net.layers)]
        classes = net.layers[-1].n_out
        super().__init__({
            "image_addr": In(range(first.n_in)), "image_data": In(net.input_bits), "image_we": In(1),
            "samples": In(range(net.max_samples + 1)), "start": In(1),
            "done": Out(1), "decision": Out(range(classes)),
            "totals": Out(classes * net.acc_bits(len(net.layers) - 1)),
        })

    def elaborate(self, platform):
        m = Module()
        net, dense = self.net, self.dense
        last = len(dense) - 1
        m.submodules.image = self.image
        write = self.image.write_port()
        read = self.image.read_port()
        m.d.comb += [write.addr.eq(self.image_addr), write.data.eq(self.image_data), write.en.eq(self.image_we),
                     read.addr.eq(dense[0].addr), dense[0].x.eq(read.data)]
        step_rng = Signal()
        bits = []
        for k, d in enumerate(dense):
            m.submodules[f"dense{k}"] = d
            if k < last:
                bits.append(neurons(m, f"layer{k}", net, k, d, step_rng))
        shifts = [Signal(d.n_in, name=f"shift{k}") for k, d in enumerate(dense)]
        for k in range(1, len(dense)):
            m.d.comb += dense[k].x.eq(shifts[k][0])
            with m.If(dense[k].step):
                m.d.sync += shifts[k].eq(shifts[k] >> 1)
        t = Signal(range(net.max_samples + 1))
        totals = [lane.acc for lane in dense[last].lanes]
        m.d.comb += self.totals.eq(Cat(*totals))
        best = [Signal(range(len(totals)), name=f"best{c}") for c in range(len(totals))]
        most = [Signal.like(totals[0], name=f"most{c}") for c in range(len(totals))]
        m.d.comb += [best[0].eq(0), most[0].eq(totals[0])]
        for c in range(1, len(totals)):  # the first class with the largest total
            with m.If(totals[c] > most[c - 1]):
                m.d.comb += [best[c].eq(c), most[c].eq(totals[c])]
            with m.Else():
                m.d.comb += [best[c].eq(best[c - 1]), most[c].eq(most[c - 1])]
        m.d.sync += self.done.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.comb += [dense[0].start.eq(1), dense[0].clear.eq(1), dense[last].clear.eq(1)]
                    m.d.sync += t.eq(0)
                    m.next = "L0"
            with m.State("L0"):
                with m.If(dense[0].done):
                    m.next = "SAMPLE1"
            for k in range(1, len(dense)):
                with m.State(f"SAMPLE{k}"):
                    inputs = Cat(*bits[k - 1], Const(1, 1)) if k == last else Cat(*bits[k - 1])
                    m.d.sync += shifts[k].eq(inputs)
                    m.d.comb += dense[k].start.eq(1)
                    if k < last:
                        m.d.comb += dense[k].clear.eq(1)
                    m.next = f"L{k}"
                with m.State(f"L{k}"):
                    with m.If(dense[k].done):
                        if k < last:
                            m.next = f"SAMPLE{k + 1}"
                        else:
                            m.d.comb += step_rng.eq(1)
                            m.d.sync += t.eq(t + 1)
                            with m.If(t + 1 >= self.samples):
                                m.next = "FINISH"
                            with m.Else():
                                m.next = "SAMPLE1"
            with m.State("FINISH"):
                m.d.sync += [self.decision.eq(best[-1]), self.done.eq(1)]
                m.next = "IDLE"
        return m


class Generators(Component):
    """All hidden layers' random-number generators of ``net`` on their own (``u`` side by side),
    so that synthesis can count what they cost against the whole :class:`Core`."""

    def __init__(self, net: fixed.FixedNet):
        self.net = net
        width = sum(layer.n_out for layer in net.hidden) * net.random_bits
        super().__init__({"en": In(1), "u": Out(width)})

    def elaborate(self, platform):
        m = Module()
        us = []
        for k, layer in enumerate(self.net.hidden):
            us += random_numbers(m, f"layer{k}", self.net.rng, k, layer.n_out, self.net.random_bits, self.en)
        m.d.comb += self.u.eq(Cat(*us))
        return m
