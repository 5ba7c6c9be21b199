"""Generative p-DNNs: the VAE's sample-aware objective, and images generated from T samples.

Sample-aware training of a generator follows the classifiers' rule: the decoder runs ``s``
samples for each latent, their pixel intensities are averaged, and the reconstruction loss is
computed on that average -- the image the decoder will produce at test time with T = s. The
objective is the negative ELBO per image, in nats:

    loss = sum_pixels BCE(mean_s decoder_s(z), x) + KL(N(mu, sigma^2) || N(0, I)),
    z = mu + sigma * eps,  eps ~ N(0, I) drawn from the run's sampling generator.

Generation draws z ~ N(0, I) from a seeded generator and averages T decoder samples.
"""
from __future__ import annotations

import torch
from torch import nn

import statistics

from .checks import MAX_COUNT, positive_int, shown, torch_seed
from .errors import UsageError
from .evaluate import is_deterministic
from .fid import feature_statistics, frechet_distance, min_images
from .models import VAE
from .progress import progress_bar
from .sampling import SampledModel, check_samples

_EPS = 1e-6  # keeps the BCE finite where an average of sigmoids reaches 0 or 1 in float32


class SampledVAE(nn.Module):
    """A VAE whose decoder runs ``samples`` samples per latent and averages them.

    ``forward(x, target)`` returns the per-image loss terms ``(reconstruction, kl)``
    of shape ``[B]``; ``x`` is the encoder's (normalised) input and ``target`` the image on the
    0..1 scale. One module, so ``DistributedDataParallel`` sees encoder and decoder together.
    """

    def __init__(self, vae: VAE, samples: int = 1, seed: int | None = None):
        super().__init__()
        self.vae = vae
        self.decoder = SampledModel(vae.decoder, samples, reduce="mean", seed=seed)

    def generator(self, device) -> torch.Generator | None:
        return self.decoder.generator(device)

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.vae.encode(x)
        eps = torch.randn(mu.shape, generator=self.generator(mu.device), device=mu.device, dtype=mu.dtype)
        image = self.decoder(mu + eps * (0.5 * logvar).exp()).clamp(_EPS, 1 - _EPS)
        reconstruction = nn.functional.binary_cross_entropy(image, target, reduction="none").flatten(1).sum(1)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        return reconstruction, kl


@torch.no_grad()
def vae_test_loss(vae: VAE, images: torch.Tensor, prepare, samples: int, seed: int, batch_size: int = 500) -> float:
    """Mean negative ELBO (nats per image) of uint8 ``images`` with ``samples`` decoder samples,
    in eval mode (batch norm from running statistics); restores the previous mode."""
    was_training = vae.training
    sampled = SampledVAE(vae.eval(), samples, seed=seed)
    total = 0.0
    try:
        for x in images.split(batch_size):
            reconstruction, kl = sampled(prepare(x), x.float() / 255)
            total += float((reconstruction + kl).sum())
    finally:
        vae.train(was_training)
    return total / len(images)


def check_generator(model: nn.Module, what: str) -> VAE:
    """``model`` if it is a generator, else a one-line error naming what it is."""
    if not isinstance(model, VAE):
        raise UsageError(f"{what} holds a {type(model).__name__} (a classifier); expected a generator "
                         "trained with --task vae")
    return model


@torch.no_grad()
def generate_at(vae: VAE, samples: list[int], n: int, seed: int = 0, max_rows: int = 1024,
                device: str | torch.device = "cpu", progress: bool = False) -> dict[int, torch.Tensor]:
    """``n`` images ``[n, C, H, W]`` in [0, 1] for every T in ``samples``; the image at T is the
    mean of the first T of max(T) decoder samples of its latent.

    Latents come from a generator seeded with ``seed`` and the decoder's p-bits from one seeded
    with ``seed + 1``. The images at different T are thus of the same latents and nested in their
    samples (T = 10 extends T = 5), so a curve against T shows the effect of T alone, at the cost
    of max(T) samples per image rather than sum(T). A decoder call holds at most ``max_rows``
    rows (latents x samples; the samples of one latent in parts when max(T) exceeds it), so
    memory does not grow with T. The same arguments give the same images; the draws of an image
    are laid out by these calls, so its p-bits change with ``n``, max(T) and ``max_rows``.
    ``progress``: a bar over the images.
    """
    if not samples:
        raise UsageError("samples: expected at least one T")
    samples = sorted({check_samples(t) for t in samples})
    # (n latents of vae.latent float32 numbers each: a storage whose size in bytes torch can hold)
    positive_int("n (number of images)", n, most=MAX_COUNT // (4 * vae.latent))
    positive_int("max_rows", max_rows)
    seed = torch_seed("seed", seed, 1)  # the p-bits' seed is seed + 1
    vae = vae.to(device).eval()
    pool = max(samples)
    latents = torch.randn(n, vae.latent, generator=torch.Generator().manual_seed(seed)).to(device)
    decoder = SampledModel(vae.decoder, pool, reduce="none", seed=seed + 1)
    out: dict[int, list[torch.Tensor]] = {t: [] for t in samples}
    with progress_bar(total=n, desc=f"generating (T={pool})", unit="img", enabled=progress) as bar:
        for z in latents.split(max(1, max_rows // pool)):
            for t, image in _means(decoder, z, samples, max_rows).items():
                out[t].append(image)
            bar.update(len(z))
    return {t: torch.cat(images) for t, images in out.items()}


def _means(decoder: SampledModel, z: torch.Tensor, samples: list[int], max_rows: int) -> dict[int, torch.Tensor]:
    """The mean of the first T of max(T) decoder samples of the latents ``z``, for every T in
    ``samples``: in one call, or -- when max(T) alone exceeds ``max_rows`` -- ``max_rows``
    samples at a time, summed as they come."""
    pool, means, done, total = max(samples), {}, 0, None
    for start in range(0, pool, max_rows):  # (a range: a list of the sizes would grow with T)
        decoder.samples = size = min(max_rows, pool - start)
        cumulative = decoder(z).double().cumsum(0)  # [size, B, C, H, W]
        if done:
            cumulative += total
        for t in samples:
            if done < t <= done + size:
                means[t] = (cumulative[t - done - 1] / t).float().cpu()
        done, total = done + size, cumulative[-1]
    decoder.samples = pool
    return means


def generate(vae: VAE, samples: int, n: int, seed: int = 0, device: str | torch.device = "cpu",
             progress: bool = False) -> torch.Tensor:
    """``n`` images, each the mean of ``samples`` (T) decoder samples (see :func:`generate_at`)."""
    return generate_at(vae, [samples], n, seed, device=device, progress=progress)[check_samples(samples)]


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> uint8 0..255 (rounded). NaN pixels are refused: cast, they became black
    pixels, and a distance measured on them an ordinary-looking number."""
    if (nan := int(torch.isnan(images).sum())) > 0:
        raise UsageError(f"{nan} of {images.numel()} pixels of the generated images are NaN (the decoder's output); "
                         "expected numbers in [0, 1]")
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def fid_vs_samples(vae: VAE, real: torch.Tensor, extractor, samples: list[int], n: int, repeats: int = 3,
                   seed: int = 0, device: str | torch.device = "cpu", progress: bool = False) -> list[dict]:
    """Fréchet distance between ``n`` generated images and the real uint8 images ``real`` (the
    first ``n`` are used), in the features of ``extractor``, for every T in ``samples``.

    Repeat ``r`` generates from seed ``seed + 2 r`` (new latents and p-bit draws); the real
    features are computed once. A decoder without stochastic neurons gives the same image for
    every T, so it is measured at T = 1 only. Returns one row per T: ``{"samples", "metric",
    "mean", "std", "values", "repeats", "n"}``. ``progress``: a bar over repeats x T values.
    """
    repeats = positive_int("repeats", repeats)  # (named before the seeds it spans: 10**20 was blamed on the seed)
    if isinstance(n, bool) or not isinstance(n, int) or n < min_images(extractor.dim):
        raise UsageError(f"--n {shown(n)} is below {min_images(extractor.dim)}: the covariance of "
                         f"{extractor.dim} features ({extractor.metric}) needs at least that many images")
    if len(real) < n:
        raise UsageError(f"--n {shown(n)} exceeds the {len(real)} held-out real images available")
    seed = torch_seed("seed", seed, 2 * repeats - 1)  # repeat r: seed + 2 r, its p-bits one more
    samples = [1] if is_deterministic(vae.decoder) else sorted({check_samples(t) for t in samples})
    of = f"features ({extractor.metric}) that {getattr(extractor, 'source', 'the feature extractor')} gives"
    real_stats = feature_statistics(extractor(real[:n]), f"the {of} the first {n} real images")
    values: dict[int, list[float]] = {t: [] for t in samples}
    with progress_bar(total=repeats * len(samples), desc="fid", unit="T", enabled=progress) as bar:
        for r in range(repeats):
            images = generate_at(vae, samples, n, seed=seed + 2 * r, device=device)
            for t in samples:
                generated = feature_statistics(extractor(to_uint8(images[t])), f"the {of} the images generated at T = {t}")
                values[t].append(frechet_distance(*generated, *real_stats))
                bar.update()
    return [{"samples": t, "metric": extractor.metric, "mean": statistics.fmean(v),
             "std": statistics.stdev(v) if len(v) > 1 else 0.0, "values": v, "repeats": repeats, "n": n}
            for t, v in values.items()]


def image_grid(images: torch.Tensor, nrow: int = 10, pad: int = 2) -> torch.Tensor:
    """uint8 images ``[N, C, H, W]`` tiled ``nrow`` per row with ``pad`` black pixels between:
    uint8 ``[C, rows * (H + pad) + pad, nrow * (W + pad) + pad]``."""
    n, c, h, w = images.shape
    nrow = min(positive_int("nrow (images per row)", nrow, most=None), max(n, 1))  # no column stays empty
    rows = -(-n // nrow)
    grid = torch.zeros(c, rows * (h + pad) + pad, nrow * (w + pad) + pad, dtype=torch.uint8)
    for i, image in enumerate(images):
        top, left = pad + (i // nrow) * (h + pad), pad + (i % nrow) * (w + pad)
        grid[:, top : top + h, left : left + w] = image
    return grid
