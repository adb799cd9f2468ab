"""``python -m asymspec``: the same command line as the ``asymspec`` script."""

from asymspec.cli import main

if __name__ == "__main__":
    main()
