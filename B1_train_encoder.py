"""B1_train_encoder — not built yet (see the open issues)."""

import sys

if __name__ == "__main__":
    print("error: B1_train_encoder.py is not built yet; its issue is still open", file=sys.stderr)
    sys.exit(2)
