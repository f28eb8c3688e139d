"""Private implementation of the ``ommx-experiment`` command line (see :mod:`ommx_experiment.cli`).

One small module per command group; each exposes ``register(subparsers, parents)``.
Nothing here is public API.
"""
