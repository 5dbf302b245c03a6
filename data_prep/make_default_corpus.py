"""Write tinylm's embedded default corpus (generated, no download) as default.train / default.dev.

    python data_prep/make_default_corpus.py --out data/default --words 250000 --seed 0
"""
import argparse
import time

from tinylm.data.default_corpus import write_corpus


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--words", type=int, default=250_000, help="total words (train + dev)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dev-fraction", type=float, default=0.05)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    stats = write_corpus(args.out, n_words=args.words, seed=args.seed,
                         dev_fraction=args.dev_fraction)
    print(f"wrote {args.out}/default.train and default.dev in {time.perf_counter() - t0:.2f}s: "
          + ", ".join(f"{k}={v}" for k, v in stats.items()))
    return stats


if __name__ == "__main__":
    main()
