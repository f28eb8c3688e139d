"""Tests of ommx_experiment.edges (the folder mirrors src/ommx_experiment/edges)."""
