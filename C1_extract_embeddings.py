"""C1_extract_embeddings — not built yet (see the open issues)."""

import sys

if __name__ == "__main__":
    print(
        "error: C1_extract_embeddings.py is not built yet; its issue is still open", file=sys.stderr
    )
    sys.exit(2)
