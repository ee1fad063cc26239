"""`python -m panowan` (and `torchrun -m panowan`) runs the CLI."""

from panowan.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
