"""Classical denoisers the learned ones are compared with, told the true sigma: BM3D (the ``bm3d`` package)
and non-local means (scikit-image), and the photograph chapter 03 denoises at its own resolution."""
from __future__ import annotations


import numpy as np
import torch


def nlmeans_denoiser(patch_size: int = 3, patch_distance: int = 5, h_factor: float = 0.8):
    """A classical reference denoiser for ``cdn.evaluate.psnr_vs_sigma``: scikit-image's non-local
    means (Buades, Coll and Morel, 2005) told the true sigma, with filtering strength
    ``h = h_factor * sigma``, applied image by image on the CPU. Returns ``denoise(y, sigma, c)``."""
    from skimage.restoration import denoise_nl_means

    def denoise(y: torch.Tensor, sigma: float, c=None) -> torch.Tensor:
        arr = y.detach().float().cpu().numpy()
        out = [denoise_nl_means(img.transpose(1, 2, 0), h=h_factor * float(sigma), sigma=float(sigma),
                                patch_size=patch_size, patch_distance=patch_distance, fast_mode=True,
                                channel_axis=-1).reshape(img.shape[1], img.shape[2], img.shape[0]).transpose(2, 0, 1)
               for img in arr]
        return torch.from_numpy(np.stack(out)).to(y.device, y.dtype)

    return denoise


def photo(size: int, channels: int = 3, name: str = "astronaut") -> torch.Tensor:
    """A photograph shipped with scikit-image (``skimage.data.<name>``) resized to ``size`` x
    ``size`` (anti-aliased), grey when ``channels`` is 1, as a (C, size, size) float tensor in [0, 1]."""
    from skimage import data as skdata
    from skimage.color import rgb2gray
    from skimage.transform import resize

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    img = getattr(skdata, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = img[..., :3].astype(np.float32) / 255.0
    side = min(img.shape[:2])
    img = img[:side, :side]
    if channels == 1:
        img = rgb2gray(img)[..., None]
    img = resize(img, (size, size, channels), anti_aliasing=True)
    return torch.from_numpy(np.clip(img, 0, 1).transpose(2, 0, 1).copy()).float()




#: the noise levels of that comparison
CLASSICAL_SIGMAS = (0.05, 0.1, 0.2)


def bm3d_denoiser(profile: str = "np"):
    """A classical reference denoiser for ``cdn.evaluate.psnr_vs_sigma``: BM3D (Dabov, Foi, Katkovnik
    and Egiazarian, 2007; the pip package ``bm3d``, Mäkinen, Azzari and Foi) told the true sigma,
    ``bm3d_rgb`` on colour images (in its opponent colour space) and ``bm3d`` on grey ones, image by
    image on the CPU (chapter "Denoising"). Returns ``denoise(y, sigma, c)``; ``sigma = 0`` returns
    ``y``."""
    try:
        import bm3d
    except ImportError as err:
        raise ImportError("BM3D needs the pip package bm3d (in the book extra): pip install bm3d") from err

    def denoise(y: torch.Tensor, sigma: float, c=None) -> torch.Tensor:
        if float(sigma) == 0.0:
            return y
        out = []
        for img in y.detach().double().cpu().numpy():
            z = img.transpose(1, 2, 0)
            d = bm3d.bm3d_rgb(z, float(sigma), profile) if z.shape[2] == 3 else bm3d.bm3d(z[..., 0], float(sigma),
                                                                                        profile)[..., None]
            out.append(np.asarray(d).reshape(z.shape).transpose(2, 0, 1))
        return torch.from_numpy(np.stack(out)).to(y.device, y.dtype)

    return denoise
