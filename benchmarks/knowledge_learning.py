"""What the document in the sample changes: the Veltrane leaf (12 invented facts, its own document
repository) through `labtune generate`, `labtune train` and `labtune evaluate` with the real
SmolLM2-135M-Instruct as teacher and student on CPU (labtune_dev/knowledge_learning.py), once with
LAB's knowledge samples (the chunk before the question in phase 1, RAFT samples and auxiliary
rewrites in phase 2) and once with the bare generated Q&A that labtune wrote before. Prints the base
and tuned scores on 12 questions asked without the document and worded unlike the data: the
reference fact's mean per-token NLL (nats, lower is better) and the share of generated answers that
name the fact.

    python benchmarks/knowledge_learning.py [--epochs 4] [--variant both|lab|bare]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from labtune.trainer.gguf_cache import hf_folder
from labtune_dev.knowledge_learning import Outcome, run
from labtune_dev.models import smollm2_gguf


def _row(name: str, outcome: Outcome) -> str:
    base, tuned = outcome.base, outcome.tuned
    knowledge, skills = outcome.generated.outputs.knowledge, outcome.generated.outputs.skills
    sizes = f"{knowledge.samples if knowledge else 0} + {skills.samples if skills else 0}"
    times = ", ".join(f"{k} {v:.0f} s" for k, v in outcome.seconds.items())
    return (
        f"| {name} | {sizes} | {base.nll:.3f} → {tuned.nll:.3f} | "
        f"{base.contains:.2f} → {tuned.contains:.2f} | {times} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=4, help="epochs of the knowledge phase")
    parser.add_argument("--variant", choices=("both", "lab", "bare"), default="both")
    args = parser.parse_args()
    model = hf_folder(smollm2_gguf())
    rows = []
    for name, lab in (("LAB (chunk in the sample, RAFT, auxiliary)", True), ("bare Q&A", False)):
        if args.variant != "both" and args.variant != ("lab" if lab else "bare"):
            continue
        with tempfile.TemporaryDirectory(prefix="labtune-knowledge-") as folder:
            outcome = run(Path(folder), model, lab=lab, epochs=args.epochs)
        rows.append(_row(name, outcome))
        print(rows[-1], flush=True)
    print("\n| knowledge samples | datasets (phase 1 + 2) | NLL base → tuned | names the fact | time |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
