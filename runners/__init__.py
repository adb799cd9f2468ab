"""The experiments shipped with asymspec, one package per ``kind`` (``runners/<kind>/``), each
holding its runner, its report (tables + figures) and its settings schema fragment.

They are registered through the ``asymspec.runners`` entry-point group in ``pyproject.toml``
(``lmc = "runners.lmc:LMCRunner"``, ...) and built on the toolkit in :mod:`asymspec.run`;
``runners/README.md`` documents that toolkit for anyone writing a runner.  ``asymspec`` itself
never imports this package.
"""
