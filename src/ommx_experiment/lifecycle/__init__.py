"""The experiment lifecycle: ``Experiment``, ``Run`` and everything they record, with OMMX 3's semantics.

Owns experiments and their sessions (``experiment``, ``session``), runs
(``run``, with ``recorder`` the explicit interface that ``solve`` and ``tracing``
record through), adapter calls (``solve``, ``diagnostics``), traces
(``tracing``), attachment namespaces (``attachments``), the autosave policy
(``autosave``), lifecycle reasons (``reason``) and artifact handles
(``artifact``).

May import: ``ommx_experiment.edges``, ``ommx_experiment.format``,
``ommx_experiment.engine``, ``errors``, ``media_types``.
"""
