"""Tests of ommx_experiment.lifecycle (the folder mirrors src/ommx_experiment/lifecycle)."""
