"""The speed benchmarks' library: test video, each stage alone, the pipeline, its real-time
capacity and memory, the GPU figures, and the report (``python -m tools.benchmark``); the engines'
throughput (``tools.benchmark_engines``) and what the frame statistics cost (``tools.benchmark_stats``)."""
