"""Networks written the way people write them, not the way pdnn would: read a batch size from the
input, build tensors from shapes, return tuples and dicts, take keyword arguments, branch in
Python, loop over nested containers. Each has p-bits (``pdnn.nn.PBit``) or is converted with
``pdnn.convert.to_sampled``. ``ZOO`` maps a name to an :class:`Entry`; ``tests/test_zoo.py``
checks every one of them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pdnn.convert import to_sampled
from pdnn.nn import PBit


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act = PBit()
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return self.act(out)


class ResNet(nn.Module):
    """The usual CIFAR ResNet, small: ``out.view(x.size(0), -1)`` reads the batch from the input."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 8))
        self.layer2 = BasicBlock(8, 16, stride=2)
        self.linear = nn.Linear(16, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer2(self.layer1(out))
        out = F.adaptive_avg_pool2d(out, 1)
        out = out.view(x.size(0), -1)
        return self.linear(out)


class VGG(nn.Module):
    """VGG-style: a config list, ``batch_size = x.shape[0]`` read first, dropout in the head."""

    cfg = [8, "M", 16, "M"]

    def __init__(self, num_classes=10):
        super().__init__()
        layers, c = [], 3
        for v in self.cfg:
            if v == "M":
                layers += [nn.MaxPool2d(2)]
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), PBit()]
                c = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.3), nn.Linear(16 * 4 * 4, 32), PBit(), nn.Dropout(0.3),
                                        nn.Linear(32, num_classes))

    def forward(self, x):
        batch_size = x.shape[0]
        x = self.features(x)
        x = x.reshape(batch_size, -1)
        return self.classifier(x)


class DepthwiseSeparable(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.dw = nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False)
        self.bn1 = nn.BatchNorm2d(c_in)
        self.pw = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.act1, self.act2 = PBit(), PBit()

    def forward(self, x):
        return self.act2(self.bn2(self.pw(self.act1(self.bn1(self.dw(x))))))


class MobileNet(nn.Module):
    """Depthwise-separable convolutions, ``torch.flatten(x, 1)``."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(DepthwiseSeparable(8, 16, 2), DepthwiseSeparable(16, 16, 1))
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.pool(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


class MixerBlock(nn.Module):
    def __init__(self, tokens, dim):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.token_mlp = nn.Sequential(nn.Linear(tokens, 2 * tokens), PBit(), nn.Linear(2 * tokens, tokens))
        self.channel_mlp = nn.Sequential(nn.Linear(dim, 2 * dim), PBit(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mlp(self.norm2(x))


class MLPMixer(nn.Module):
    """Patches by a strided conv, ``x.flatten(2).transpose(1, 2)``, token and channel MLPs."""

    def __init__(self, num_classes=10, patch=4, dim=16, image=16):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, patch)
        self.blocks = nn.ModuleList([MixerBlock((image // patch) ** 2, dim) for _ in range(2)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x).mean(dim=1))


class GatedEncoderBlock(nn.Module):
    """A transformer encoder block with hand-written attention (``B, N, C = x.shape``) and a gated
    feed-forward ``sigmoid(g) * tanh(v)``: the gates are what ``to_sampled`` turns into p-bits."""

    def __init__(self, dim=16, heads=2):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.gate, self.value = nn.Linear(dim, 2 * dim), nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(2 * dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * (C // self.heads) ** -0.5
        x = x + self.proj((attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, N, C))
        h = self.norm2(x)
        return x + self.out(torch.sigmoid(self.gate(h)) * torch.tanh(self.value(h)))


class TinyTransformer(nn.Module):
    def __init__(self, vocab=20, dim=16, num_classes=4, length=6):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(1, length, dim) * 0.1)
        self.blocks = nn.Sequential(GatedEncoderBlock(dim), GatedEncoderBlock(dim))
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        h = self.embed(x) + self.pos[:, : x.size(1)]
        return self.head(self.blocks(h)[:, 0])


class TwoHeads(nn.Module):
    """Returns a tuple ``(logits, features)``."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(12, 32), PBit(), nn.Linear(32, 16), PBit())
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        features = self.body(x)
        return self.head(features), features


class DictOut(nn.Module):
    """Returns a dict; its logits are read by name."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(12, 24)
        self.act = PBit("unipolar")
        self.classifier = nn.Linear(24, 3)
        self.regressor = nn.Linear(24, 1)

    def forward(self, x):
        z = self.act(self.encoder(x))
        return {"logits": self.classifier(z), "value": self.regressor(z).squeeze(-1), "code": z}


class WithKeywords(nn.Module):
    """Keyword arguments: a per-example mask (a tensor), a temperature and a flag (not tensors)."""

    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(12, 32), nn.Linear(32, 32), nn.Linear(32, 3)
        self.act = PBit()

    def forward(self, x, mask=None, temperature=1.0, return_hidden=False):
        if mask is not None:
            x = x * mask
        h = self.act(self.l1(x))
        h = self.act(self.l2(h))
        logits = self.l3(h) / temperature
        return (logits, h) if return_hidden else logits


class Recurrent(nn.Module):
    """Creates tensors sized by its input: ``x.new_zeros(x.size(0), hidden)`` as the initial state
    and ``torch.arange(x.shape[1])`` for positions; loops over a fixed number of steps."""

    def __init__(self, features=4, hidden=16, steps=5, num_classes=3):
        super().__init__()
        self.steps, self.hidden = steps, hidden
        self.inp = nn.Linear(features, hidden)
        self.rec = nn.Linear(hidden, hidden, bias=False)
        self.pos = nn.Embedding(steps, hidden)
        self.act = PBit()
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, x):
        h = x.new_zeros(x.size(0), self.hidden)
        positions = self.pos(torch.arange(x.shape[1], device=x.device))
        for t in range(self.steps):
            h = self.act(self.inp(x[:, t]) + self.rec(h) + positions[t])
        return self.out(h)


class ControlFlow(nn.Module):
    """Python control flow on shapes and values, ``torch.zeros(len(x), ...)``: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(8 * 16 * 16, 32), nn.Linear(32, 3)
        self.act = PBit()

    def forward(self, x):
        if x.dim() == 3:  # a single image
            x = x.unsqueeze(0)
        h = self.conv(x)
        if h.abs().mean() > 100:  # rescale wild inputs
            h = h / h.abs().mean()
        h = self.act(h).view(len(x), -1)
        bias = torch.zeros(x.size(0), 32)
        return self.fc2(self.act(self.fc1(h) + bias))


class DropoutMLP(nn.Module):
    """Dropout before the first p-bit (so in training its mask is a draw of the deterministic
    prefix) and between p-bit layers."""

    def __init__(self):
        super().__init__()
        self.drop_in = nn.Dropout(0.2)
        self.fc1, self.fc2, self.fc3 = nn.Linear(12, 32), nn.Linear(32, 32), nn.Linear(32, 3)
        self.act = PBit()
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        h = self.act(self.fc1(self.drop_in(x)))
        h = self.drop(self.act(self.fc2(h)))
        return self.fc3(h)


class Nested(nn.Module):
    """A ModuleDict of ModuleLists, walked in a fixed order, with per-stage skip connections."""

    def __init__(self):
        super().__init__()
        self.order = ["low", "high"]
        self.stages = nn.ModuleDict({
            "low": nn.ModuleList([nn.Sequential(nn.Linear(12, 12), PBit()) for _ in range(2)]),
            "high": nn.ModuleList([nn.Sequential(nn.Linear(12, 12), nn.BatchNorm1d(12), PBit()) for _ in range(2)]),
        })
        self.heads = nn.ModuleDict({"low": nn.Linear(12, 3), "high": nn.Linear(12, 3)})

    def forward(self, x):
        logits = 0
        for name in self.order:
            skip = x
            for layer in self.stages[name]:
                x = layer(x)
            x = x + skip
            logits = logits + self.heads[name](x)
        return logits


class PBitInATorchLayer(nn.Module):
    """A p-bit as the activation of ``nn.TransformerEncoderLayer``, a torch layer that calls it."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Linear(4, 8)
        self.enc = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, activation=PBit(), batch_first=True)
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        return self.out(self.enc(self.emb(x)).mean(1))


class TwoLayers(nn.Module):
    """``fc1`` (12 -> 32), a p-bit, ``fc2`` (32 -> 3): the body whose forward the small models vary."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(12, 32), nn.Linear(32, 3)
        self.act = PBit()


class BatchCentred(TwoLayers):
    """Centres its hidden bits over the batch (``h - h.mean(0)``): samples folded into the batch
    would be centred together, which is not what a loop of forwards computes."""

    def forward(self, x):
        h = self.act(self.fc1(x))
        return self.fc2(h - h.mean(0, keepdim=True))


class SequenceFirst(nn.Module):
    """Keeps the batch on dimension 1 (``[L, B, D]``, the default of older torch sequence code)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, 16)
        self.act = PBit()
        self.mix = nn.Linear(16, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x):  # x: [B, L, 4]
        h = self.embed(x).transpose(0, 1)  # [L, B, 16]
        h = self.act(self.mix(self.act(h)))
        return self.head(h.mean(0))


class PlainCNN(nn.Module):
    """A deterministic tanh CNN as people write it, sampled after ``to_sampled``."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1)
        self.bn1, self.bn2 = nn.BatchNorm2d(8), nn.BatchNorm2d(16)
        self.fc1, self.fc2 = nn.Linear(16 * 4 * 4, 32), nn.Linear(32, 10)

    def forward(self, x):
        x = F.max_pool2d(torch.tanh(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(torch.tanh(self.bn2(self.conv2(x))), 2)
        x = x.view(x.size(0), -1)
        return self.fc2(torch.tanh(self.fc1(x)))


class SignGate(nn.Module):
    """Picks one of two heads by the sign of the hidden bits' sum over the whole batch, without a
    Python branch (``torch.where``): folded, one sum would pick the head of every sample."""

    def __init__(self):
        super().__init__()
        self.fc1, self.up, self.down = nn.Linear(12, 32), nn.Linear(32, 3), nn.Linear(32, 3)
        self.act = PBit()

    def forward(self, x):
        h = self.act(self.fc1(x))
        return torch.where(h.sum() > 0, self.up(h), self.down(h))


class SignBranch(SignGate):
    """The same decision as a Python ``if`` (untraceable): repeated, one branch for every sample."""

    def forward(self, x):
        h = self.act(self.fc1(x))
        if h.sum() > 0:
            return self.up(h)
        return self.down(h)


class FrozenTeacher(nn.Module):
    """A frozen branch inside ``torch.no_grad()``, which a traced graph would not keep."""

    def __init__(self):
        super().__init__()
        self.fc1, self.student, self.teacher = nn.Linear(12, 32), nn.Linear(32, 3), nn.Linear(32, 3)
        self.act = PBit()

    def forward(self, x):
        h = self.act(self.fc1(x))
        with torch.no_grad():
            hint = self.teacher(h)
        return self.student(h) + hint


class _SignSTE(torch.autograd.Function):
    """A straight-through sign as users write one: sign forward, identity backward."""

    @staticmethod
    def forward(ctx, x):
        return torch.sign(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


class CustomSTE(nn.Module):
    """A custom ``autograd.Function`` after a p-bit layer: a traced graph keeps its forward (sign,
    no gradient), not its backward."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(12, 32), nn.Linear(32, 32), nn.Linear(32, 3)
        self.act = PBit()

    def forward(self, x):
        return self.fc3(_SignSTE.apply(self.fc2(self.act(self.fc1(x)))))


class TensorDefault(TwoLayers):
    """A forward whose keyword argument defaults to a tensor (fx cannot write it into its code)."""

    def forward(self, x, scale=torch.tensor(2.0)):
        return self.fc2(self.act(self.fc1(x) * scale))


class ScaledByInput(TwoLayers):
    """Scores divided by scalars made from the input (0-dim tensors, the same for every sample):
    with 3 classes a scalar repeated T times broadcast against them only where T = 3."""

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x))) / (x.new_tensor(2.0) + x.std())


class RunningStats(nn.Module):
    """Keeps state as it runs: a call counter, an average of its hidden bits, and an instance
    norm's running statistics."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(12, 32), nn.Linear(32, 3)
        self.norm = nn.InstanceNorm1d(4, track_running_stats=True)
        self.act = PBit()
        self.register_buffer("average", torch.zeros(32))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        h = self.act(self.fc1(x))
        self.average.mul_(0.9).add_(0.1 * h.detach().mean(0))
        h = self.norm(h.view(len(h), 4, 8)).flatten(1)
        return self.fc2(h)


@dataclass
class Entry:
    """A zoo model: how to build it, an input, keyword arguments for its forward, the logits in
    its output, the input shape for the energy model, and how ``SampledModel`` must run it."""

    build: Callable[[], nn.Module]
    input: Callable[[int], torch.Tensor]
    plan: str  # "graph", "repeat" (untraceable) or "loop" (folding would be wrong)
    kwargs: dict = field(default_factory=dict)
    logits: Callable = lambda out: out
    input_shape: tuple | None = None  # None: the model is not an image / vector model energy can read
    classes: int = 10


def _images(batch: int) -> torch.Tensor:
    return torch.randn(batch, 3, 16, 16)


def _vectors(batch: int) -> torch.Tensor:
    return torch.randn(batch, 12)


ZOO: dict[str, Entry] = {
    "resnet": Entry(ResNet, _images, "graph", input_shape=(3, 16, 16)),
    "vgg": Entry(VGG, _images, "graph", input_shape=(3, 16, 16)),
    "mobilenet": Entry(MobileNet, _images, "graph", input_shape=(3, 16, 16)),
    "mixer": Entry(MLPMixer, _images, "graph", input_shape=(3, 16, 16)),
    "transformer": Entry(lambda: to_sampled(TinyTransformer(), "pbit", layers="all"),
                         lambda b: torch.randint(0, 20, (b, 6)), "graph", input_shape=None, classes=4),
    "tuple": Entry(TwoHeads, _vectors, "graph", logits=lambda out: out[0], input_shape=(12,), classes=3),
    "dict": Entry(DictOut, _vectors, "graph", logits=lambda out: out["logits"], input_shape=(12,), classes=3),
    "keywords": Entry(WithKeywords, _vectors, "graph", logits=lambda out: out[0], input_shape=(12,), classes=3,
                      kwargs={"mask": "batch", "temperature": 2.0, "return_hidden": True}),
    "recurrent": Entry(Recurrent, lambda b: torch.randn(b, 5, 4), "graph", input_shape=(5, 4), classes=3),
    "control-flow": Entry(ControlFlow, _images, "repeat", input_shape=(3, 16, 16), classes=3),
    "dropout": Entry(DropoutMLP, _vectors, "graph", input_shape=(12,), classes=3),
    "nested": Entry(Nested, _vectors, "graph", input_shape=(12,), classes=3),
    "batch-centred": Entry(BatchCentred, _vectors, "loop", input_shape=(12,), classes=3),
    "sequence-first": Entry(SequenceFirst, lambda b: torch.randn(b, 5, 4), "loop", input_shape=(5, 4), classes=3),
    "converted-cnn": Entry(lambda: to_sampled(PlainCNN(), "pbit"), _images, "graph", input_shape=(3, 16, 16)),
    "sign-gate": Entry(SignGate, _vectors, "loop", input_shape=(12,), classes=3),
    "sign-branch": Entry(SignBranch, _vectors, "loop", input_shape=(12,), classes=3),
    "frozen-teacher": Entry(FrozenTeacher, _vectors, "repeat", input_shape=(12,), classes=3),
    "running-stats": Entry(RunningStats, _vectors, "loop", input_shape=(12,), classes=3),
    "custom-ste": Entry(CustomSTE, _vectors, "repeat", input_shape=(12,), classes=3),
    "tensor-default": Entry(TensorDefault, _vectors, "graph", input_shape=(12,), classes=3),
    "scaled-by-input": Entry(ScaledByInput, _vectors, "graph", input_shape=(12,), classes=3),
}


def call_kwargs(entry: Entry, x: torch.Tensor) -> dict:
    """The entry's keyword arguments, ``"batch"`` standing for a random 0/1 mask like ``x``."""
    return {k: (torch.randint(0, 2, x.shape).to(x.dtype) if v == "batch" else v) for k, v in entry.kwargs.items()}
