"""Tests of ommx_experiment.engine (the folder mirrors src/ommx_experiment/engine)."""
