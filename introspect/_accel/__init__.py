"""Native hot path for the sampler (C), mirroring the pure-Python walkers function for function."""
