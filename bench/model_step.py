"""Benchmark: CLALA-Net training step throughput on CPU, full model against the plain backbone.

Three variants of the same CLALA-Net, built from the same seed and trained on the same batch:
  plain     backbone + RoIAlign + global classifier + region lesion head (LCA, LLCL, ITCL, decoder off)
  full      plain + LCA + LLCL + ITCL (the issue's target compares this one, decoder off)
  +decoder  full + the region sentence decoder (its own cost, reported separately)

A step is forward + backward + AdamW update on one batch: B images of S x S pixels, 29 boxes each
(2 invalid), labels over the 53 lesion findings of the shipped vocabulary (about 5 % present,
5 % ignored), and a 24-token sentence for about 30 % of the regions. Default text encoder
(BERT, 2 x 128) and decoder (GPT-2, 2 x 256, 4 prefix tokens) sizes, vocabulary 2,000 tokens.
The variants alternate in each round (plain, full, +decoder, plain, ...) so load changes hit all
of them. The figure per variant is its fastest step (timeit's convention: on a shared machine a
slower step measures other processes as well); the median is printed beside it.

    python bench/model_step.py [--backbone resnet18] [--batch 8] [--size 224] [--rounds 5]
        [--steps 1] [--threads N]

Target: full / plain step time <= 1.5. Exits 0 either way; prints PASS/FAIL.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from model.net.clala_net import CLALANet, CLALANetConfig
from schemas.vocabulary import load_vocabulary

TARGET_RATIO = 1.5
REGIONS, SENTENCE_TOKENS, VOCABULARY = 29, 24, 2000


def load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def make_batch(batch: int, size: int, lesions: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    corner = torch.rand(batch, REGIONS, 2, generator=generator) * size * 0.6
    extent = size * (0.1 + torch.rand(batch, REGIONS, 2, generator=generator) * 0.3)
    box_mask = torch.ones(batch, REGIONS, dtype=torch.bool)
    box_mask[:, [23, 25]] = False  # svc and cavoatrial junction are often missing in silver boxes
    sentence_ids = torch.randint(4, VOCABULARY, (batch, REGIONS, SENTENCE_TOKENS), generator=generator)
    sentence_ids[..., -1] = 2
    return dict(
        image=torch.randn(batch, 1, size, size, generator=generator),
        boxes=torch.cat([corner, corner + extent], dim=-1),
        box_mask=box_mask,
        labels=(torch.rand(batch, REGIONS, lesions, generator=generator) < 0.05).float(),
        label_mask=torch.rand(batch, REGIONS, lesions, generator=generator) > 0.05,
        sentence_ids=sentence_ids,
        sentence_mask=torch.rand(batch, REGIONS, generator=generator) < 0.3,
    )


def build(backbone: str, lesions: list[str], **switches) -> tuple[CLALANet, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = CLALANet(CLALANetConfig(lesions=lesions, backbone=backbone, vocab_size=VOCABULARY, **switches)).train()
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4)


def step(model: CLALANet, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor]) -> float:
    start = time.perf_counter()
    output = model(batch)
    optimizer.zero_grad(set_to_none=True)
    output.loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--backbone", default="resnet18", help="timm backbone (random init)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds over the variants")
    parser.add_argument("--steps", type=int, default=1, help="timed steps per variant per round")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    lesions = [finding.name for finding in load_vocabulary().findings]
    batch = make_batch(args.batch, args.size, len(lesions))
    described = int((batch["sentence_mask"] & batch["box_mask"]).sum())
    off = dict(use_lca=False, use_llcl=False, use_itcl=False, use_decoder=False)
    variants = {
        "plain": build(args.backbone, lesions, **off),
        "full": build(args.backbone, lesions, use_decoder=False),
        "+decoder": build(args.backbone, lesions),
    }
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpus {os.cpu_count()}; "
        f"backbone {args.backbone}, batch {args.batch}, {args.size} px, {len(lesions)} lesions, "
        f"{described} described regions; load average at start: {load()}"
    )
    for name, (model, _) in variants.items():
        print(f"  {name:9s} {sum(p.numel() for p in model.parameters()) / 1e6:7.2f} M parameters")

    for model, optimizer in variants.values():  # warm-up: allocator, kernels, AdamW state
        step(model, optimizer, batch)
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (model, optimizer) in variants.items():
            seconds[name].extend(step(model, optimizer, batch) for _ in range(args.steps))

    fastest = {name: min(values) for name, values in seconds.items()}
    print(f"\n{'variant':10s} {'s/step':>8s} {'images/s':>9s} {'x plain':>8s} {'median s/step':>14s}")
    for name, value in fastest.items():
        print(
            f"{name:10s} {value:8.3f} {args.batch / value:9.2f} {value / fastest['plain']:8.2f} "
            f"{statistics.median(seconds[name]):14.3f}"
        )
    ratio = fastest["full"] / fastest["plain"]
    decoder_seconds = fastest["+decoder"] - fastest["full"]
    verdict = "PASS" if ratio <= TARGET_RATIO else "FAIL"
    print(f"\nfull / plain step time: {ratio:.2f} (target <= {TARGET_RATIO}) {verdict}")
    print(
        f"decoder's own cost: {decoder_seconds:+.3f} s/step, {decoder_seconds / fastest['plain']:+.2f} x plain "
        f"({described} sentences of {SENTENCE_TOKENS} tokens per batch)"
    )
    print(f"load average at end: {load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
