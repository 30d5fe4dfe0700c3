"""``python -m gmmseg.cli``: run the ``gmmseg`` command (as when the CLI was one module)."""

from . import main

if __name__ == "__main__":  # pragma: no cover
    main()
