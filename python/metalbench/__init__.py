"""metalbench: find the fastest correct GPU matmul kernel for every shape your model runs."""
