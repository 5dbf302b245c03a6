"""Zero-shot evaluation: minimal pairs (BLiMP, BabyLM's filtered BLiMP and supplement, EWoK, entity
tracking, wug, Zorro) scored causally or by pseudo-log-likelihood, plus dev perplexity.

    python -m tinylm.eval ckpt=RUN_DIR tasks=FOLDER [out=DIR] [scorer=causal|pll|pll_word|mntp]

formats.py reads the files, scoring.py scores candidate texts, report.py aggregates, run.py ties it
together (`evaluate`).
"""
