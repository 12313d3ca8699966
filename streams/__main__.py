"""``python -m streams`` runs the ``mxprobe`` command."""

from streams.cli import main

if __name__ == "__main__":
    main()
