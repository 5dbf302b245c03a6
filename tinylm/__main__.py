"""`python -m tinylm COMMAND ...`: the `tinylm` command without the console script (tinylm/cli.py)."""

from tinylm.cli import main

if __name__ == "__main__":
    main()
