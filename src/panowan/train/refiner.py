"""Fitting a `DepthRefiner` to a trained diffusion model's own outputs (`scripts/train_depth_refiner.py`).

1. `collect_examples`: the frozen model completes training rooms (raw output, no refiner), `epochs` view
   selections per room; every view but the reference (which has no holes) becomes one example: the refiner's
   inputs exactly as the sampler builds them (`sample.pipeline.refine_depth`) and the ground truth.
2. `fit_refiner`: AdamW on the L1 distance of log depth in the holes, where the ground truth is valid.
   For small errors |log(d / d*)| is the relative error, so this is the hole AbsRel the evaluation reports.
   Every batch is turned about the vertical axis by a random number of columns (an ERP panorama's columns
   wrap, so a roll is a rotation of the room, and the refiner's padding wraps too).
3. `evaluate_refiner`: hole AbsRel in metres of the fill, the model and the refined model on examples of
   other rooms, per view then averaged, as `panowan eval` averages.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from panowan.models.refiner import MASK_CHANNEL, DepthRefiner, refiner_inputs


@dataclass
class RefinerConfig:
    """How to fit the refiner."""

    width: int = 16
    """Channels of the refiner at full resolution (`DepthRefiner(width)`)."""
    steps: int = 3000
    """Optimiser steps."""
    batch: int = 16
    """Views per step."""
    lr: float = 1e-3
    """Peak learning rate (linear warm-up over the first 5% of the steps, then cosine to zero). At 2e-3 three
    of four fits of the shipped refiner learnt nothing (BENCHMARKS.md, "Depth refiner")."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    epochs: int = 4
    """View selections per training room (each one completed by the model: `collect_examples`)."""
    seed: int = 0
    """Seed of the refiner's initialisation, the batches and the rolls."""

    def __post_init__(self) -> None:
        for name in ("width", "steps", "batch", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"RefinerConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and self.weight_decay >= 0):
            raise ValueError(f"need lr > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RefinerExamples:
    """N views: the refiner's inputs and the ground truth, in the rooms' normalised depth space."""

    inputs_NCHW: torch.Tensor
    """The refiner's input (`refiner_inputs`): decoded depth, filled depth condition, mask (1 = known), RGB."""
    target_N1HW: torch.Tensor
    """Normalised ground-truth depth."""
    valid_N1HW: torch.Tensor
    """Where the ground truth is valid (bool)."""
    center_N: torch.Tensor
    """Each view's `DepthNorm.center` (log metres)."""
    half_range_N: torch.Tensor
    """Each view's `DepthNorm.half_range` (log metres per normalised unit)."""

    def __len__(self) -> int:
        return self.inputs_NCHW.shape[0]

    def to(self, device: torch.device | str) -> RefinerExamples:
        return RefinerExamples(*(getattr(self, k).to(device) for k in _FIELDS))

    def select(self, index: torch.Tensor, shift: int = 0) -> RefinerExamples:
        """The views `index`, their panoramas turned by `shift` columns (a yaw rotation: ERP columns wrap)."""
        index = index.to(self.inputs_NCHW.device)
        pick = lambda k: getattr(self, k)[index]  # noqa: E731
        turn = lambda t: torch.roll(t, shift, dims=-1) if shift else t  # noqa: E731
        return RefinerExamples(turn(pick("inputs_NCHW")), turn(pick("target_N1HW")), turn(pick("valid_N1HW")),
                               pick("center_N"), pick("half_range_N"))  # fmt: skip

    def holes(self) -> torch.Tensor:
        """`N,1,H,W` bool: hole pixels (mask 0) whose ground truth is valid, the pixels every score counts."""
        return (self.inputs_NCHW[:, MASK_CHANNEL : MASK_CHANNEL + 1] < 0.5) & self.valid_N1HW

    @staticmethod
    def cat(parts: list[RefinerExamples]) -> RefinerExamples:
        if not parts:
            raise ValueError("no examples: the rooms had no view with holes")
        return RefinerExamples(*(torch.cat([getattr(p, k) for p in parts]) for k in _FIELDS))


_FIELDS = ("inputs_NCHW", "target_N1HW", "valid_N1HW", "center_N", "half_range_N")


def examples_of(sample, completion) -> RefinerExamples:
    """The examples of one completed room (views 1.., whose conditions have holes)."""
    norm = sample.depth_norm
    depth = norm.normalize(completion.raw_depth_m_F1HW.double()).float()
    inputs = refiner_inputs(depth, sample.cond_depth, sample.mask, completion.raw_rgb_F3HW * 2 - 1)[1:]
    n = inputs.shape[0]
    return RefinerExamples(
        inputs_NCHW=inputs,
        target_N1HW=sample.depth[1:],
        valid_N1HW=sample.depth_valid[1:].bool(),
        center_N=torch.full((n,), float(norm.center)),
        half_range_N=torch.full((n,), float(norm.half_range)),
    )


class _Selections(torch.utils.data.Dataset):
    """(room, epoch) pairs of a `RoomDataset`, loaded by DataLoader workers."""

    def __init__(self, dataset, epochs: int) -> None:
        self.dataset, self.pairs = dataset, [(e, i) for e in range(epochs) for i in range(len(dataset))]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, k: int):
        epoch, index = self.pairs[k]
        return epoch, self.dataset.sample(index, epoch)


def collect_examples(
    model, codec, encoder, dataset, *, epochs: int, sampling: dict, seed: int = 0, workers: int = 0,
    progress: bool = True,
) -> RefinerExamples:  # fmt: skip
    """Complete `epochs` view selections of every room of `dataset` (a `RoomDataset` with the model's fills)
    with the frozen `model`, without its refiner; `sampling`: `complete_room`'s steps, sampler, flow_shift.
    Selection (epoch e) is sampled with noise seed `seed + e`."""
    from tqdm import tqdm

    from panowan.sample.pipeline import complete_room

    loader = torch.utils.data.DataLoader(
        _Selections(dataset, epochs), batch_size=None, shuffle=False, num_workers=workers
    )
    parts = []
    for epoch, sample in tqdm(loader, desc="model outputs", unit="room", disable=not progress):
        completion = complete_room(model, codec, encoder, sample, seed=seed + epoch, composite=False,
                                   refine=False, progress=False, **sampling)  # fmt: skip
        parts.append(examples_of(sample, completion))
    return RefinerExamples.cat(parts)


def hole_log_l1(pred_N1HW: torch.Tensor, examples: RefinerExamples) -> torch.Tensor:
    """Mean |log d - log d*| over the hole pixels with valid ground truth of `examples`."""
    weight = examples.holes()
    err = (pred_N1HW.float() - examples.target_N1HW).abs() * examples.half_range_N.view(-1, 1, 1, 1)
    return (err * weight).sum() / weight.sum().clamp(min=1)


def _schedule(step: int, total: int) -> float:
    warmup = max(1, total // 20)
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def fit_refiner(
    examples: RefinerExamples,
    config: RefinerConfig,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> tuple[DepthRefiner, list[float]]:
    """A refiner fitted to `examples`, and the loss of every step."""
    from tqdm import tqdm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        refiner = DepthRefiner(config.width).to(device)
    opt = torch.optim.AdamW(refiner.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, config.steps))
    gen = torch.Generator().manual_seed(config.seed)
    width = examples.inputs_NCHW.shape[-1]
    if torch.device(device).type == "cuda":  # a batch gathered on the host would cost more than the step
        examples = examples.to(device)
    losses = []
    for _ in tqdm(range(config.steps), desc="refiner", unit="step", disable=not progress):
        index = torch.randint(len(examples), (config.batch,), generator=gen)
        shift = int(torch.randint(width, (1,), generator=gen))
        batch = examples.select(index, shift).to(device)
        loss = hole_log_l1(refiner(batch.inputs_NCHW), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return refiner.eval().requires_grad_(False), losses


def _absrel(depth_n_1HW: torch.Tensor, view: RefinerExamples) -> float | None:
    """Hole AbsRel in metres of a one-view `view`, or None without valid hole pixels."""
    hole = view.holes()[0]
    if not hole.any():
        return None
    center, half_range = float(view.center_N[0]), float(view.half_range_N[0])
    to_m = lambda n: torch.exp(n.double() * half_range + center)  # noqa: E731
    pred, truth = to_m(depth_n_1HW.cpu())[hole], to_m(view.target_N1HW[0])[hole]
    return float(((pred - truth).abs() / truth).mean())


@torch.no_grad()
def evaluate_refiner(refiner: DepthRefiner, examples: RefinerExamples, device="cpu") -> dict[str, float]:
    """Mean hole AbsRel (metres, per view) of the depth condition's fill, the model, and the refined model."""
    scores: dict[str, list[float]] = {"fill": [], "model": [], "refined": []}
    for k in range(len(examples)):
        view = examples.select(torch.tensor([k]))
        refined = refiner(view.inputs_NCHW.to(device))[0].clamp(-1, 1)
        for name, depth in (
            ("fill", view.inputs_NCHW[0, 1:2]),
            ("model", view.inputs_NCHW[0, :1]),
            ("refined", refined),
        ):
            value = _absrel(depth, view)
            if value is not None:
                scores[name].append(value)
    return {f"hole_absrel_{name}": sum(v) / len(v) for name, v in scores.items() if v}
