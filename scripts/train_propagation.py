"""Train the sparse-mode propagation network on synthetic data and save its folder (card + weights).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/train_propagation.py --minutes 25 \\
        --out Resources/Models/sparse-propagation

Reproducible from ``--seed`` (the generator, the network's initial weights and the sample order);
prints the loss and a fixed synthetic validation set's Dice as it goes, and saves the best state
by that Dice at each validation (so a stopped run leaves a usable model). See
``MedSegExtension/sparse/propagation_training.py`` for the data.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from MedSegExtension.sparse.propagation_model import new_network, propagation_card, save_propagation_model  # noqa: E402
from MedSegExtension.sparse.propagation_training import SYNTHESIS, train_steps, training_sample  # noqa: E402
from MedSegExtension.training.synthesis import LabelToImageSynthesizer  # noqa: E402


def validation_set(count: int, shape: tuple[int, int, int], seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed + 1000)
    synthesizer = LabelToImageSynthesizer(SYNTHESIS, seed=seed + 1000)
    return [training_sample(shape, rng, synthesizer) for _ in range(count)]


def validation_dice(network: torch.nn.Module, samples: list[tuple[np.ndarray, np.ndarray]]) -> float:
    was_training = network.training
    network.eval()
    scores = []
    with torch.inference_mode():
        for inputs, target in samples:
            predicted = network(torch.from_numpy(inputs)[None])[0].argmax(0).numpy() == 1
            truth = target == 1
            scores.append(2 * (predicted & truth).sum() / max(predicted.sum() + truth.sum(), 1))
    network.train(was_training)
    return float(np.mean(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="model folder to write (propagation.json + weights)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--minutes", type=float, default=25.0, help="wall-clock cap")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--patch", type=int, default=48, help="training patch side (voxels)")
    parser.add_argument("--window", type=int, default=64, help="inference window side written in the card")
    parser.add_argument("--channels", default="8,16,32,64")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--validate-every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out}: exists and is not a folder")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    shape = (args.patch,) * 3
    channels = tuple(int(c) for c in args.channels.split(","))
    card = propagation_card(channels, args.window)
    network = new_network(card)
    samples = validation_set(8, shape, args.seed)
    start = time.perf_counter()
    best = {"dice": -1.0, "step": 0}
    losses: list[float] = []

    def report(step: int, loss: float, final: bool = False) -> None:
        if not final:
            losses.append(loss)
        if not final and step % args.validate_every and step != args.steps:
            return
        dice = validation_dice(network, samples)
        elapsed = time.perf_counter() - start
        print(f"step {step}: loss {np.mean(losses[-args.validate_every:]):.3f}, validation Dice {dice:.3f}, "
              f"{elapsed:.0f} s", flush=True)
        if dice > best["dice"]:
            best.update(dice=dice, step=step)
            card.training = {"steps": step, "seed": args.seed, "patch": list(shape), "batch_size": args.batch_size,
                             "learning_rate": args.learning_rate, "validation_dice": round(dice, 4),
                             "seconds": round(elapsed), "data": "synthetic label maps and images only "
                             "(MedSegExtension/sparse/propagation_training.py)",
                             "command": "scripts/train_propagation.py " + " ".join(sys.argv[1:])}
            save_propagation_model(card, network, out)

    done = train_steps(network, args.steps, shape=shape, batch_size=args.batch_size,
                       learning_rate=args.learning_rate, seed=args.seed, time_limit=args.minutes * 60,
                       report=report)
    if done % args.validate_every and done != args.steps:
        report(done, losses[-1], final=True)  # validate (and maybe save) the final state of a capped run
    print(f"done: {done} steps in {time.perf_counter() - start:.0f} s; best validation Dice {best['dice']:.3f} "
          f"at step {best['step']}; saved to {out}", flush=True)


if __name__ == "__main__":
    main()
