"""lm-evaluation-harness on an S3CMN checkpoint folder: continuations and a rolling document.

    pip install -e ".[lmeval]"
    python examples/lm_eval_harness.py runs/tiny/best
"""

from __future__ import annotations

import argparse

from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

import s3cmn  # noqa: F401  (registers the auto classes: HFLM loads the folder by path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--context", default="The game was released in")
    parser.add_argument("--continuations", default=" Japan| 2010| .")
    args = parser.parse_args(argv)

    lm = HFLM(pretrained=args.checkpoint, batch_size=4, device="cpu")
    print(f"max_length {lm.max_length} (the trained sequence length), prefix token {lm.prefix_token_id}")
    continuations = args.continuations.split("|")
    requests = [Instance("loglikelihood", {}, (args.context, c), i) for i, c in enumerate(continuations)]
    for c, (ll, greedy) in zip(continuations, lm.loglikelihood(requests), strict=True):
        print(f"log p({c!r} | {args.context!r}) = {ll:.4f}{' (greedy)' if greedy else ''}")
    document = "The game was released in Japan in 2010 . It was praised for its story ."
    (rolling,) = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (document,), 0)])
    print(f"rolling log-likelihood of a {len(document.split())}-word document: {rolling:.4f}")


if __name__ == "__main__":
    main()
