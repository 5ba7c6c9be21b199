"""Run the RTL under Amaranth's simulator: one hidden layer on bit vectors, or the whole core
on images. The results are compared with :func:`pdnn.hw.fixed.reference` by the callers."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from ..errors import ToolError, UsageError
from . import fixed
from .rtl import Core, PBitLayer
from .synth import yosys

try:
    from amaranth.sim import Simulator
except ImportError:  # without the hw extra; `pdnn hw` says how to install it
    Simulator = None


def _run(dut, bench) -> None:
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def simulate_layer(net: fixed.FixedNet, k: int, vectors: np.ndarray) -> np.ndarray:
    """Hidden AC layer ``k`` on rows of +-1 inputs ``[N, n_in]``; row g is the layer's sample g
    after reset. Returns the +-1 output bits ``[N, n_out]``."""
    vectors = np.asarray(vectors)
    dut = PBitLayer(net, k)
    weights = 1 << np.arange(vectors.shape[1], dtype=object)
    words = [int(((row > 0).astype(object) * weights).sum()) for row in vectors]
    out: list[int] = []

    async def bench(ctx):
        for word in words:
            ctx.set(dut.x, word)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            await ctx.tick().until(dut.done)
            out.append(ctx.get(dut.bits))

    _run(dut, bench)
    n_out = net.layers[k].n_out
    return np.array([[1 if (w >> i) & 1 else -1 for i in range(n_out)] for w in out], dtype=np.int64)


def split_totals(word: int, net: fixed.FixedNet) -> list[int]:
    """The class totals packed in the core's ``totals`` port, as signed integers."""
    bits = net.acc_bits(len(net.layers) - 1)
    values = [(word >> (c * bits)) & ((1 << bits) - 1) for c in range(net.layers[-1].n_out)]
    return [v - (1 << bits) if v >> (bits - 1) else v for v in values]


def simulate_core(net: fixed.FixedNet, images: np.ndarray, samples: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The core on ``images`` (uint8 ``[N, n_in]``), one after another from reset, T = ``samples``.
    Returns ``(totals [N, classes], decisions [N], cycles)``."""
    if not 1 <= samples <= net.max_samples:
        raise UsageError(f"samples T must be in 1..{net.max_samples}, got {samples}")
    images = fixed.check_images(net, images)
    dut = Core(net)
    totals, decisions = [], []
    cycles = [0]

    async def bench(ctx):
        ctx.set(dut.samples, samples)
        for image in images:
            for j, v in enumerate(image.tolist()):
                ctx.set(dut.image.data[j], v)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            n = 1
            while not ctx.get(dut.done):
                await ctx.tick()
                n += 1
            cycles[0] += n
            decisions.append(ctx.get(dut.decision))
            totals.append(split_totals(ctx.get(dut.totals), net))

    _run(dut, bench)
    return np.array(totals, dtype=np.int64), np.array(decisions, dtype=np.int64), cycles[0]


_TESTBENCH = """`timescale 1ns/1ps
module tb;
  reg clk = 0, rst = 1, image_we = 0, start = 0;
  reg [{aw}-1:0] image_addr = 0;
  reg [{ib}-1:0] image_data = 0;
  reg [{sw}-1:0] samples = {samples};
  wire done;
  wire [{dw}-1:0] decision;
  wire [{tw}-1:0] totals;
  pdnn_core dut(.clk(clk), .rst(rst), .image_addr(image_addr), .image_data(image_data), .image_we(image_we),
                .samples(samples), .start(start), .done(done), .decision(decision), .totals(totals));
  reg [{ib}-1:0] pixels [0:{total}-1];
  integer i, j, f;
  always #5 clk = ~clk;
  initial begin
    $readmemh("images.mem", pixels);
    f = $fopen("out.txt", "w");
    @(posedge clk); #1 rst = 0;
    for (i = 0; i < {count}; i = i + 1) begin
      for (j = 0; j < {n_in}; j = j + 1) begin
        image_addr = j; image_data = pixels[i * {n_in} + j]; image_we = 1;
        @(posedge clk); #1;
      end
      image_we = 0; start = 1;
      @(posedge clk); #1 start = 0;
      while (!done) begin @(posedge clk); #1; end
      $fwrite(f, "%0d %h\\n", decision, totals);
    end
    $fclose(f);
    $finish;
  end
endmodule
"""


def core_verilog(net: fixed.FixedNet, workdir) -> None:
    """Write the core as ``core.v`` in ``workdir`` (Amaranth's RTLIL, turned into Verilog by Yosys)."""
    from amaranth.back import rtlil

    (Path(workdir) / "core.il").write_text(rtlil.convert(Core(net), name="pdnn_core"))
    yosys("read_rtlil core.il; proc; opt_clean; write_verilog -noattr core.v", workdir)


def simulate_core_verilog(net: fixed.FixedNet, images: np.ndarray, samples: int, workdir) -> tuple[np.ndarray, np.ndarray]:
    """The same core, emitted as Verilog and run under Icarus Verilog (an optional extra, much
    faster than the Python simulator). Returns ``(totals, decisions)`` like :func:`simulate_core`."""
    import shutil

    for tool in ("iverilog", "vvp"):
        if shutil.which(tool) is None:
            raise FileNotFoundError(f"{tool} not found; install Icarus Verilog (e.g. `apt-get install iverilog`) "
                                    "or use the Python simulator")
    if not 1 <= samples <= net.max_samples:
        raise UsageError(f"samples T must be in 1..{net.max_samples}, got {samples}")
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    images = fixed.check_images(net, images)
    first = net.layers[0]
    core_verilog(net, work)
    (work / "images.mem").write_text("".join(f"{int(v):x}\n" for v in images.reshape(-1)))
    classes = net.layers[-1].n_out
    (work / "tb.v").write_text(_TESTBENCH.format(
        aw=max(1, (first.n_in - 1).bit_length()), ib=net.input_bits, sw=(net.max_samples).bit_length(),
        samples=samples, dw=max(1, (classes - 1).bit_length()), tw=classes * net.acc_bits(len(net.layers) - 1),
        total=images.size, count=len(images), n_in=first.n_in))
    _tool(["iverilog", "-g2012", "-o", "core.vvp", "tb.v", "core.v"], work)
    _tool(["vvp", "-n", "core.vvp"], work)
    decisions, totals = [], []
    for line in (work / "out.txt").read_text().split("\n"):
        if line.strip():
            d, word = line.split()
            decisions.append(int(d))
            totals.append(split_totals(int(word, 16), net))
    return np.array(totals, dtype=np.int64), np.array(decisions, dtype=np.int64)


def _tool(command: list[str], work: Path) -> None:
    """Run an Icarus program in ``work``; its failure is a :class:`ToolError` naming it, not a mismatch."""
    done = subprocess.run(command, cwd=work, capture_output=True, text=True)
    if done.returncode:
        said = (done.stderr or done.stdout).strip()[-800:]
        raise ToolError(f"{command[0]} failed (exit {done.returncode}){': ' + said if said else ''}")
