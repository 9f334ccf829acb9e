"""hv-emu's benchmarks (``make bench``): speed is measured here, never in timed tests."""
