"""Training for letcolor: `python -m train --dataset ... --output DIR` (see `python -m train --help`)."""
