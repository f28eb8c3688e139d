"""Tests of ommx_experiment.cli (the folder mirrors src/ommx_experiment/cli)."""
