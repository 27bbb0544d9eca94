"""Offline generators that stand in for CURVES and FACES when the real .mat files are absent.

Both follow the published recipes (docs/method.md, "Data") closely enough to exercise the same
autoencoders on data of the same kind, but they are NOT the original data sets: losses on them
are not comparable with the papers' numbers. Each is deterministic given its seed and draws from
an explicitly seeded torch.Generator, never from the global RNG.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.data import DataError, default_root, fetch_hint, load_mat_array

CURVES_SIZE = 28
OLIVETTI_FILE = "olivettifaces.mat"
OLIVETTI_KEY = "faces"
OLIVETTI_URL = "https://cs.nyu.edu/~roweis/data/olivettifaces.mat"  # Sam Roweis' copy of the AT&T faces
OLIVETTI_SHAPE = (4096, 400)  # 64x64 images as columns, 40 people x 10 images
FACES_SIZE = 25
N_PEOPLE, IMAGES_PER_PERSON = 40, 10
N_TEST_PEOPLE = 10  # the original split was 25/5/10 train/valid/test; here 30 train / 10 test


def stream_seed(seed: int, stream: int) -> int:
    """An independent 63-bit seed for sub-stream `stream` of `seed` (e.g. train=0, test=1).

    Avoids the overlap of naive schemes such as seed+1 (train of seed 1 == test of seed 0).
    """
    state = np.random.SeedSequence([seed, stream]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- CURVES-like

def _segment_distance(points: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance from points to segments a-b, elementwise over leading dims (last dim = 2)."""
    d = b - a
    t = (((points - a) * d).sum(-1) / (d * d).sum(-1).clamp_min(1e-12)).clamp(0.0, 1.0)
    return (points - a - t.unsqueeze(-1) * d).norm(dim=-1)


def curves_synth(n: int, seed: int, size: int = CURVES_SIZE, n_samples: int = 32,
                 chunk: int = 1000) -> torch.Tensor:
    """n images (n, size*size) of a smooth curve through three random points, values in [0, 1].

    The curve is the quadratic Bezier that passes through P0 (t=0), P1 (t=1/2) and P2 (t=1),
    drawn with a random stroke width between 1 and 2.5 pixels. Anti-aliasing: a pixel's
    intensity falls linearly from 1 to 0 over the last pixel of distance to the curve.
    The distance is to a polyline of `n_samples` points on the curve: the nearest point comes
    from one batched cdist, then the two segments beside it give the exact distance, so long
    curves are not drawn as beads.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    gen = _generator(seed)
    margin = 3.0
    points = margin + (size - 1 - 2 * margin) * torch.rand(n, 3, 2, generator=gen)
    half_width = 0.5 * (1.0 + 1.5 * torch.rand(n, 1, generator=gen))
    p0, p1, p2 = points[:, 0], points[:, 1], points[:, 2]
    control = 2.0 * p1 - 0.5 * (p0 + p2)  # makes the curve pass through p1 at t = 1/2
    t = torch.linspace(0.0, 1.0, n_samples).view(1, -1, 1)
    curve = (1 - t) ** 2 * p0[:, None] + 2 * (1 - t) * t * control[:, None] + t ** 2 * p2[:, None]  # (n, S, 2)
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    pixels = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)  # (size*size, 2) as (x, y)
    out = torch.empty(n, size * size)
    for start in range(0, n, chunk):
        c = curve[start:start + chunk]
        b = c.shape[0]
        nearest = torch.cdist(pixels.expand(b, -1, -1), c).argmin(dim=2)  # (b, P) sample index

        def vertex(k):  # the curve sample k for every pixel, (b, P, 2)
            return torch.gather(c, 1, k.clamp(0, n_samples - 1).unsqueeze(-1).expand(-1, -1, 2))

        here = vertex(nearest)
        distance = torch.minimum(_segment_distance(pixels, vertex(nearest - 1), here),
                                 _segment_distance(pixels, here, vertex(nearest + 1)))
        out[start:start + chunk] = (half_width[start:start + chunk] + 0.5 - distance).clamp_(0.0, 1.0)
    return out


# ----------------------------------------------------------------------------- FACES-like

def load_olivetti(path: str | Path) -> torch.Tensor:
    """The 400 Olivetti faces as float32 (400, 64, 64) in [0, 1]; image i shows person i // 10."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: Olivetti faces file not found; faces_synth needs {OLIVETTI_FILE} "
                        f"(key {OLIVETTI_KEY!r}, {OLIVETTI_SHAPE[0]}x{OLIVETTI_SHAPE[1]} uint8), "
                        f"from {OLIVETTI_URL}; {fetch_hint('olivetti')}")
    faces = load_mat_array(path, OLIVETTI_KEY, OLIVETTI_SHAPE, value_range=(0, 255))
    images = faces.T.reshape(-1, 64, 64).transpose(0, 2, 1)  # MATLAB column-major storage
    return torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32) / 255.0)


def split_people(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint train and test people (30 and 10 of the 40), drawn from the seed."""
    order = torch.randperm(N_PEOPLE, generator=_generator(stream_seed(seed, 2)))
    return order[N_TEST_PEOPLE:].sort().values, order[:N_TEST_PEOPLE].sort().values


def _transform(faces: torch.Tensor, people: torch.Tensor, n: int, gen: torch.Generator,
               chunk: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
    """n random variants of the given people's faces, standardised per image; also each one's person.

    Each variant: a random image of a random person, rotated by U(-90, 90) degrees, magnified by
    U(1.4, 2.0) (so the 25x25 crop covers 1/scale of the face), shifted by up to 5% of the
    width, sampled bilinearly on a 50x50 grid and average-pooled 2x2 to 25x25 (anti-aliasing).
    """
    person = people[torch.randint(len(people), (n,), generator=gen)]
    index = person * IMAGES_PER_PERSON + torch.randint(IMAGES_PER_PERSON, (n,), generator=gen)
    angle = (torch.rand(n, generator=gen) * 180.0 - 90.0) * (math.pi / 180.0)
    scale = 1.4 + 0.6 * torch.rand(n, generator=gen)
    shift = (torch.rand(n, 2, generator=gen) - 0.5) * 0.1
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    out = torch.empty(n, FACES_SIZE * FACES_SIZE)
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        src = faces[index[sl]].unsqueeze(1)  # (chunk, 1, 64, 64)
        grid = F.affine_grid(theta[sl], [src.shape[0], 1, 2 * FACES_SIZE, 2 * FACES_SIZE], align_corners=False)
        sampled = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
        out[sl] = F.avg_pool2d(sampled, 2).reshape(src.shape[0], -1)
    out = (out - out.mean(dim=1, keepdim=True)) / out.std(dim=1, keepdim=True).clamp_min(1e-6)
    return out, person


def faces_synth(n_train: int, n_test: int, seed: int, olivetti_path: str | Path | None = None,
                return_people: bool = False):
    """FACES-like data from the Olivetti faces: (train, test) float32 rows (n, 625).

    Train and test come from disjoint people (see `split_people`). With `return_people`, also
    returns each row's person id: (train, test, train_person, test_person).
    """
    if n_train < 0 or n_test < 0:
        raise ValueError(f"sizes must be >= 0, got n_train={n_train}, n_test={n_test}")
    if olivetti_path is None:
        olivetti_path = default_root("olivetti") / OLIVETTI_FILE
    faces = load_olivetti(olivetti_path)
    train_people, test_people = split_people(seed)
    train, train_person = _transform(faces, train_people, n_train, _generator(stream_seed(seed, 0)))
    test, test_person = _transform(faces, test_people, n_test, _generator(stream_seed(seed, 1)))
    if return_people:
        return train, test, train_person, test_person
    return train, test
