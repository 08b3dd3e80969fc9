"""Development tools, not part of the image: a local Kafka broker assembled from Maven jars, the
stack helper that runs a broker and worker processes for the demo, the tests and the benchmarks,
and the demo itself."""
