"""Benchmarks (make bench) and the stub SSE server with injected timings."""
