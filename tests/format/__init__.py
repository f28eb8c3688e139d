"""Tests of ommx_experiment.format (the folder mirrors src/ommx_experiment/format)."""
